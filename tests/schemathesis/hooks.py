"""Schemathesis hooks for choreo's OpenAPI conformance run.

Hypothesis draws the same Idempotency-Key (say "0") for many different bodies;
the server rightly answers 422 to a key reused with another body, which
schemathesis would count as a valid request rejected. Every schema-valid key
therefore gets a fresh value; invalid keys are left alone so their rejection
is still exercised.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"[\x21-\x7E]{1,255}")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        headers["Idempotency-Key"] = str(uuid.uuid4())

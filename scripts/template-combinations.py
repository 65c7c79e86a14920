#!/usr/bin/env python3
"""Resolves template.yaml for each combination of the choices its parameters
offer, as CloudFormation would at deploy time, so that each can be linted as
deployed: `sam validate` takes no parameter values, and cfn-lint on the
template alone lints every condition at once, with the optional parameters'
empty defaults.

    template-combinations.py TEMPLATE OUTDIR

For each combination of EventSource (SQS, AmazonMQ, MSK, SelfManagedKafka) x ApiAuth (IAM, JWT) x
bridge (off, --invoke sqs, --invoke lambda) x VPC (off, on):
- the template's Rules are evaluated with its parameter values; a
  combination they refuse is not deployable and is not written, and whether
  they refuse it must match what the choices allow (below), or this fails;
- otherwise the parameters' defaults become the combination's values, the
  conditions are evaluated, resources and outputs whose condition is false
  are dropped, `Fn::If` is replaced by its chosen branch, `AWS::NoValue`
  removed, the Conditions section and the template's cfn-lint ignores
  dropped, and the result written to OUTDIR/<combination>.yaml.

Needs PyYAML (a dependency of cfn-lint). Exit status 1 on any mismatch.
"""

import itertools
import pathlib
import sys

import yaml

ACCOUNT = "123456789012"
REGION = "us-east-1"
AMQP_SECRET = {"AmqpSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:choreo-amqp-AbCdEf"}
VALUES = {
    "base": {},
    "AmazonMQ": {
        **AMQP_SECRET,
        "EventSource": "AmazonMQ",
        "MqBrokerArn": f"arn:aws:mq:{REGION}:{ACCOUNT}:broker:choreo:b-1234abcd-56ef-78ab-90cd-1234567890ab",
        "MqCredentialsSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:choreo-mq-AbCdEf",
    },
    "SQS": {**AMQP_SECRET, "EventSource": "SQS"},
    # No AMQP secret in the Kafka modes: nothing of RabbitMQ may need one there.
    "MSK": {
        "EventSource": "MSK",
        "MskClusterArn": f"arn:aws:kafka:{REGION}:{ACCOUNT}:cluster/choreo/1234abcd-56ef-78ab-90cd-1234567890ab-2",
        "KafkaBootstrapServers": "b-1.choreo.abc123.c2.kafka.us-east-1.amazonaws.com:9096,"
        "b-2.choreo.abc123.c2.kafka.us-east-1.amazonaws.com:9096",
        "KafkaSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:AmazonMSK_choreo-AbCdEf",
        "KafkaSecretKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-56ef-78ab-90cd-1234567890ab",
    },
    # SCRAM-SHA-256 and a secret under the default key: the other branches of those choices.
    "SelfManagedKafka": {
        "EventSource": "SelfManagedKafka",
        "KafkaBootstrapServers": "kafka-1.example.com:9094,kafka-2.example.com:9094,kafka-3.example.com:9094",
        "KafkaSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:choreo-kafka-AbCdEf",
        "KafkaSaslMechanism": "SCRAM-SHA-256",
    },
    "IAM": {"ApiAuth": "IAM"},
    "JWT": {"ApiAuth": "JWT", "JwtIssuer": "https://issuer.example.com/", "JwtAudience": "choreo"},
    "no-bridge": {},
    "bridge-sqs": {"BridgeImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/choreo:1", "BridgeInvoke": "sqs"},
    "bridge-lambda": {
        "BridgeImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/choreo:1",
        "BridgeInvoke": "lambda",
        "BridgeCpuArchitecture": "ARM64",
    },
    "no-vpc": {},
    # With a VPC, alarms notify a topic too (one more choice covered).
    "vpc": {
        "SubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
        "SecurityGroupIds": "sg-0123456789abcdef0",
        "AlarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:choreo-alarms",
    },
}
DIMENSIONS = [
    ["SQS", "AmazonMQ", "MSK", "SelfManagedKafka"],
    ["IAM", "JWT"],
    ["no-bridge", "bridge-sqs", "bridge-lambda"],
    ["no-vpc", "vpc"],
]


def deployable(event_source, bridge, vpc):
    """What the choices allow: the bridge runs in SQS mode only, in a VPC (Fargate needs subnets)."""
    return bridge == "no-bridge" or (event_source == "SQS" and vpc == "vpc")


class Unresolvable(Exception):
    pass


def evaluate(node, parameters, conditions, cache):
    """A condition or rule expression, with parameter values."""
    if isinstance(node, dict) and len(node) == 1:
        (key, value), = node.items()
        if key == "Ref":
            if value not in parameters:
                raise Unresolvable(f"Ref {value} is no parameter")
            return str(parameters[value])
        if key == "Condition":
            if value not in cache:
                cache[value] = evaluate(conditions[value], parameters, conditions, cache)
            return cache[value]
        if key == "Fn::Equals":
            left, right = (evaluate(item, parameters, conditions, cache) for item in value)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not evaluate(value[0], parameters, conditions, cache)
        if key == "Fn::And":
            return all(evaluate(item, parameters, conditions, cache) for item in value)
        if key == "Fn::Or":
            return any(evaluate(item, parameters, conditions, cache) for item in value)
        if key == "Fn::Join":
            delimiter, items = value
            return delimiter.join(str(evaluate(item, parameters, conditions, cache)) for item in items)
        if key == "Fn::Split":
            delimiter, text = value
            return str(evaluate(text, parameters, conditions, cache)).split(delimiter)
        if key == "Fn::Select":
            index, items = value
            items = evaluate(items, parameters, conditions, cache)
            if not 0 <= int(index) < len(items):
                raise Unresolvable(f"Fn::Select {index} of {items!r} is out of range")
            return items[int(index)]
    if isinstance(node, (str, int, float)):
        return node
    raise Unresolvable(f"cannot evaluate {node!r}")


NO_VALUE = object()


def resolve(node, truth):
    """`node` with every Fn::If decided and AWS::NoValue removed."""
    if isinstance(node, dict):
        if list(node) == ["Fn::If"]:
            name, then, otherwise = node["Fn::If"]
            return resolve(then if truth[name] else otherwise, truth)
        if node == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        resolved = {key: resolve(value, truth) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}
    if isinstance(node, list):
        return [item for item in (resolve(item, truth) for item in node) if item is not NO_VALUE]
    return node


def refusals(template, parameters):
    """The rules whose condition holds and an assertion fails."""
    refused = []
    for name, rule in (template.get("Rules") or {}).items():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], parameters, {}, {}):
            continue
        for assertion in rule["Assertions"]:
            if not evaluate(assertion["Assert"], parameters, {}, {}):
                refused.append(f"{name}: {assertion.get('AssertDescription', '')}")
    return refused


def combination(template, choices):
    """The template as deployed with `choices`, or the rules that refuse them."""
    given = {}
    for choice in ("base", *choices):
        given.update(VALUES[choice])
    declared = template["Parameters"]
    unknown = set(given) - set(declared)
    if unknown:
        raise Unresolvable(f"no such parameters: {sorted(unknown)}")
    parameters = {name: given.get(name, spec.get("Default")) for name, spec in declared.items()}
    parameters.update({"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"})
    missing = [name for name, value in parameters.items() if value is None]
    if missing:
        raise Unresolvable(f"no value for {missing}")
    refused = refusals(template, parameters)
    if refused:
        return None, refused
    conditions = template.get("Conditions") or {}
    cache = {}
    truth = {name: evaluate({"Condition": name}, parameters, conditions, cache) for name in conditions}
    resolved = dict(template)
    resolved.pop("Conditions", None)
    metadata = dict(resolved.get("Metadata") or {})
    metadata.pop("cfn-lint", None)
    if metadata:
        resolved["Metadata"] = metadata
    else:
        resolved.pop("Metadata", None)
    resolved["Parameters"] = {
        name: {**spec, "Default": given[name]} if name in given else spec for name, spec in declared.items()
    }
    for section in ("Resources", "Outputs"):
        kept = {}
        for name, item in (template.get(section) or {}).items():
            condition = item.get("Condition")
            if condition is not None and not truth[condition]:
                continue
            kept[name] = resolve({key: value for key, value in item.items() if key != "Condition"}, truth)
        resolved[section] = kept
    return resolved, []


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    template = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())
    out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    problems, written, refused_count = [], 0, 0
    for choices in itertools.product(*DIMENSIONS):
        event_source, _, bridge, vpc = choices
        label = "-".join(choices)
        try:
            resolved, refused = combination(template, choices)
        except Unresolvable as error:
            problems.append(f"{label}: {error}")
            continue
        expected = deployable(event_source, bridge, vpc)
        if expected and refused:
            problems.append(f"{label} should deploy, but the rules refuse it: {refused}")
        elif not expected and not refused:
            problems.append(f"{label} cannot work, but no rule refuses it")
        elif refused:
            refused_count += 1
            print(f"refused (as it should be): {label}: {refused[0]}")
        else:
            (out / f"{label}.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False, width=1000))
            written += 1
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{written} deployable combinations written to {out}, {refused_count} refused by the rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())

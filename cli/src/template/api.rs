//! The HTTP API: routes from the choreography table, IAM or JWT auth.

use super::yaml::*;
use super::*;

/// The HTTP API. Its OpenAPI body lists each route with the security the
/// `ApiAuth` parameter picks; SAM adds each route's Lambda integration from
/// the functions' `HttpApi` events.
pub(super) fn http_api(choreography: &[FunctionSpec]) -> Node {
    let security = fn_if(AUTH_IS_IAM, list([map([(IAM_SCHEME, list([]))])]), list([map([(JWT_SCHEME, list([]))])]));
    let mut paths: Vec<(String, Node)> = Vec::new();
    for route in choreography.iter().flat_map(|spec| spec.routes) {
        let operation =
            (route.method.to_ascii_lowercase(), map([("security", security.clone()), ("responses", map::<&str>([]))]));
        match paths.iter_mut().find(|(path, _)| path == route.path) {
            Some((_, Node::Map(operations))) => operations.push(operation),
            _ => paths.push((route.path.to_owned(), Node::Map(vec![operation]))),
        }
    }
    let iam_scheme = map([
        ("type", s("apiKey")),
        ("name", s("Authorization")),
        ("in", s("header")),
        ("x-amazon-apigateway-authtype", s("awsSigv4")),
    ]);
    let jwt_scheme = map([
        ("type", s("oauth2")),
        (
            "x-amazon-apigateway-authorizer",
            map([
                ("type", s("jwt")),
                ("identitySource", s("$request.header.Authorization")),
                (
                    "jwtConfiguration",
                    map([("issuer", reference("JwtIssuer")), ("audience", list([reference("JwtAudience")]))]),
                ),
            ]),
        ),
    ]);
    map([
        ("Type", s("AWS::Serverless::HttpApi")),
        (
            "Properties",
            map([
                ("Description", s("choreo HTTP API (openapi.yaml); routes from the choreography table")),
                (
                    "DefaultRouteSettings",
                    map([
                        ("ThrottlingBurstLimit", reference("ThrottlingBurstLimit")),
                        ("ThrottlingRateLimit", reference("ThrottlingRateLimit")),
                    ]),
                ),
                (
                    "DefinitionBody",
                    map([
                        ("openapi", s("3.0.1")),
                        ("info", map([("title", sub("${AWS::StackName}")), ("version", s(env!("CARGO_PKG_VERSION")))])),
                        ("paths", Node::Map(paths)),
                        (
                            "components",
                            map([(
                                "securitySchemes",
                                map([
                                    (IAM_SCHEME, when(AUTH_IS_IAM, iam_scheme)),
                                    (JWT_SCHEME, when(AUTH_IS_JWT, jwt_scheme)),
                                ]),
                            )]),
                        ),
                    ]),
                ),
            ]),
        ),
    ])
}

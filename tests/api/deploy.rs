//! The ready-made configurations under `deploy/` agree with authd's defaults: Envoy's ext_authz
//! filter points at a cluster on authd's gRPC port over HTTP/2 and never fails open; the
//! jwt_authn variant fetches the JWKS from authd's HTTP port and keeps ext_authz beside it for
//! revocation; the Kubernetes Deployment probes grpc.health.v1 and mounts the keys directory
//! where AUTHD_SIGNING_KEYS_DIR points; Traefik's forwardAuth asks authd's `/verify` and copies
//! exactly authd's identity headers. (Envoy, Kubernetes and Traefik are not available here, so
//! these files are parsed and checked, not run; nginx and Caddy run in `gateways.rs`.)

use std::net::SocketAddr;

use yaml_rust2::{Yaml, YamlLoader};

fn load(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn port(address: &str) -> i64 {
    i64::from(address.parse::<SocketAddr>().unwrap().port())
}

/// The HTTP filters of the (only) listener's connection manager.
fn http_filters(config: &Yaml) -> Vec<Yaml> {
    let listener = &config["static_resources"]["listeners"][0];
    let manager = &listener["filter_chains"][0]["filters"][0];
    assert_eq!(
        manager["name"].as_str(),
        Some("envoy.filters.network.http_connection_manager")
    );
    manager["typed_config"]["http_filters"]
        .as_vec()
        .expect("http_filters")
        .clone()
}

fn filter<'a>(filters: &'a [Yaml], name: &str) -> &'a Yaml {
    filters
        .iter()
        .find(|f| f["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {name} filter"))
}

/// The cluster named `name`: whether it speaks HTTP/2, and its one endpoint's port.
fn cluster(config: &Yaml, name: &str) -> (bool, i64) {
    let cluster = config["static_resources"]["clusters"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .clone();
    let http2 = !cluster["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
        ["http2_protocol_options"]
        .is_badvalue();
    let endpoint = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
    let port = endpoint["address"]["socket_address"]["port_value"]
        .as_i64()
        .expect("a port");
    (http2, port)
}

/// The ext_authz filter fails closed and names an HTTP/2 cluster on authd's gRPC port.
fn assert_ext_authz(config: &Yaml, filters: &[Yaml]) {
    let ext_authz = &filter(filters, "envoy.filters.http.ext_authz")["typed_config"];
    assert_eq!(ext_authz["failure_mode_allow"].as_bool(), Some(false));
    assert_eq!(ext_authz["transport_api_version"].as_str(), Some("V3"));
    let cluster_name = ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .expect("an envoy_grpc cluster");
    let (http2, grpc_port) = cluster(config, cluster_name);
    assert!(http2, "gRPC to authd needs HTTP/2");
    assert_eq!(grpc_port, port(authd::config::DEFAULT_LISTEN_ADDR));
    assert_eq!(
        filters.last().unwrap()["name"].as_str(),
        Some("envoy.filters.http.router"),
        "the router comes last"
    );
}

#[test]
fn the_envoy_ext_authz_configuration_points_at_authd_and_fails_closed() {
    let config = &load("deploy/envoy/ext-authz.yaml")[0];
    assert_ext_authz(config, &http_filters(config));
}

#[test]
fn the_envoy_jwt_authn_configuration_fetches_authds_jwks_and_keeps_ext_authz_for_revocation() {
    let config = &load("deploy/envoy/jwt-authn.yaml")[0];
    let filters = http_filters(config);
    assert_ext_authz(config, &filters);
    let provider =
        &filter(&filters, "envoy.filters.http.jwt_authn")["typed_config"]["providers"]["authd"];
    assert_eq!(
        provider["issuer"].as_str(),
        Some("authd"),
        "AUTHD_JWT_ISSUER's default"
    );
    assert_eq!(provider["audiences"][0].as_str(), Some("authd"));
    let jwks = &provider["remote_jwks"]["http_uri"];
    let uri = url::Url::parse(jwks["uri"].as_str().unwrap()).unwrap();
    assert_eq!(uri.path(), "/.well-known/jwks.json");
    let http_port = port(authd::config::DEFAULT_HTTP_LISTEN_ADDR);
    assert_eq!(uri.port().map(i64::from), Some(http_port));
    let (_, cluster_port) = cluster(config, jwks["cluster"].as_str().unwrap());
    assert_eq!(cluster_port, http_port);
}

#[test]
fn the_kubernetes_deployment_probes_grpc_health_and_mounts_the_keys_directory() {
    let documents = load("deploy/kubernetes/authd.yaml");
    let deployment = documents
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let grpc_port = port(authd::config::DEFAULT_LISTEN_ADDR);
    assert_eq!(
        container["livenessProbe"]["grpc"]["port"].as_i64(),
        Some(grpc_port)
    );
    assert_eq!(
        container["readinessProbe"]["grpc"]["port"].as_i64(),
        Some(grpc_port)
    );
    assert_eq!(
        container["readinessProbe"]["grpc"]["service"].as_str(),
        Some(authd::api::health::SERVICE_NAME)
    );
    let env = |name: &str| {
        container["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str().map(str::to_owned))
    };
    assert_eq!(env("AUTHD_LISTEN_ADDR").map(|a| port(&a)), Some(grpc_port));
    let keys_dir = env("AUTHD_SIGNING_KEYS_DIR").expect("AUTHD_SIGNING_KEYS_DIR");
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(keys_dir.as_str()))
        .expect("the keys directory is mounted");
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert!(
        !volume["secret"]["secretName"].is_badvalue(),
        "from a Secret"
    );
    let service = documents
        .iter()
        .find(|d| d["kind"].as_str() == Some("Service"))
        .expect("a Service");
    let ports: Vec<i64> = service["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert!(ports.contains(&grpc_port));
    assert!(ports.contains(&port(authd::config::DEFAULT_HTTP_LISTEN_ADDR)));
}

#[test]
fn the_traefik_configuration_forward_auths_to_verify_and_copies_exactly_authds_headers() {
    let dynamic = &load("deploy/traefik/dynamic.yml")[0]["http"];
    let forward_auth = &dynamic["middlewares"]["authd"]["forwardAuth"];
    let address = url::Url::parse(forward_auth["address"].as_str().expect("an address")).unwrap();
    assert_eq!(address.path(), "/verify");
    assert_eq!(
        address.port().map(i64::from),
        Some(port(authd::config::DEFAULT_HTTP_LISTEN_ADDR))
    );
    assert_eq!(forward_auth["trustForwardHeader"].as_bool(), Some(false));
    let copied: Vec<String> = forward_auth["authResponseHeaders"]
        .as_vec()
        .expect("authResponseHeaders")
        .iter()
        .map(|h| h.as_str().unwrap().to_ascii_lowercase())
        .collect();
    let prefix = authd::config::DEFAULT_FORWARD_HEADER_PREFIX;
    assert_eq!(
        copied,
        ["user-id", "session-id", "jti"].map(|name| format!("{prefix}{name}"))
    );
    let app = &dynamic["routers"]["app"];
    assert_eq!(app["middlewares"][0].as_str(), Some("authd"));
    let grpc = &dynamic["services"][dynamic["routers"]["authd-grpc"]["service"]
        .as_str()
        .unwrap()];
    let servers = grpc["loadBalancer"]["servers"].as_vec().unwrap();
    assert!(servers.len() >= 2, "several instances");
    for server in servers {
        let url = url::Url::parse(server["url"].as_str().unwrap()).unwrap();
        assert_eq!(url.scheme(), "h2c", "gRPC to authd without TLS is h2c");
    }
    let static_config = &load("deploy/traefik/traefik.yml")[0];
    for entry_point in [
        &app["entryPoints"][0],
        &dynamic["routers"]["authd-grpc"]["entryPoints"][0],
    ] {
        let name = entry_point.as_str().unwrap();
        assert!(
            !static_config["entryPoints"][name]["address"].is_badvalue(),
            "entry point {name} is defined"
        );
    }
}

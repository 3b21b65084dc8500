//! The ready-made configurations under `deploy/` agree with authd's defaults: Envoy's ext_authz
//! filter points at a cluster on authd's gRPC port over HTTP/2 and never fails open; the
//! jwt_authn variant fetches the JWKS from authd's HTTP port and keeps ext_authz beside it for
//! revocation; the Kubernetes manifests (plain and TLS) mount the keys directory where
//! AUTHD_SIGNING_KEYS_DIR points, set only variables authd reads, probe readiness on the back
//! ends and liveness without them, and in the TLS variant read every certificate from the
//! cert-manager Secret; Traefik's forwardAuth asks authd's `/verify` and copies
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

/// A Kubernetes manifest's Deployment pod spec, its container and its Service.
struct Manifest {
    documents: Vec<Yaml>,
}

impl Manifest {
    fn load(path: &str) -> Self {
        Self {
            documents: load(path),
        }
    }

    fn kind(&self, kind: &str) -> &Yaml {
        self.documents
            .iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("a {kind}"))
    }

    fn pod(&self) -> &Yaml {
        &self.kind("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Yaml {
        &self.pod()["containers"][0]
    }

    fn env(&self, name: &str) -> Option<String> {
        self.container()["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str().map(str::to_owned))
    }

    fn env_names(&self) -> Vec<String> {
        self.container()["env"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The volume mounted where `path` lives (the longest mount path that holds it).
    fn volume_holding(&self, path: &str) -> &Yaml {
        let mount = self.container()["volumeMounts"]
            .as_vec()
            .unwrap()
            .iter()
            .filter(|m| {
                let mount_path = m["mountPath"].as_str().unwrap();
                path == mount_path || path.starts_with(&format!("{mount_path}/"))
            })
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("nothing is mounted where {path} lives"));
        self.pod()["volumes"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume")
    }

    /// Checks what both manifests share: the keys directory from a Secret, the ports, the
    /// variables authd knows, a readiness probe on the back ends and a liveness probe that
    /// does not restart pods during a back-end outage.
    fn assert_common(&self) {
        let config = <authd::config::Config as clap::CommandFactory>::command();
        let known: Vec<String> = config
            .get_arguments()
            .filter_map(|argument| argument.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        for name in self.env_names() {
            assert!(
                name.starts_with("AUTHD_HEALTHCHECK_") || known.contains(&name),
                "authd reads no {name}"
            );
        }
        let grpc_port = port(authd::config::DEFAULT_LISTEN_ADDR);
        let http_port = port(authd::config::DEFAULT_HTTP_LISTEN_ADDR);
        assert_eq!(
            self.env("AUTHD_LISTEN_ADDR").map(|a| port(&a)),
            Some(grpc_port)
        );
        assert_eq!(
            self.env("AUTHD_HTTP_LISTEN_ADDR").map(|a| port(&a)),
            Some(http_port)
        );
        let keys_dir = self
            .env("AUTHD_SIGNING_KEYS_DIR")
            .expect("AUTHD_SIGNING_KEYS_DIR");
        assert!(
            !self.volume_holding(&keys_dir)["secret"]["secretName"].is_badvalue(),
            "the keys directory comes from a Secret"
        );
        let container_port = |name: &str| {
            self.container()["ports"]
                .as_vec()
                .unwrap()
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_i64())
        };
        assert_eq!(container_port("grpc"), Some(grpc_port));
        assert_eq!(container_port("http"), Some(http_port));
        let ports: Vec<i64> = self.kind("Service")["spec"]["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        assert!(ports.contains(&grpc_port));
        assert!(ports.contains(&http_port));
        // grpc.health.v1 says NOT_SERVING for "" too while a back end is down: liveness must
        // not ask it (a Redis outage would restart every pod).
        let liveness = &self.container()["livenessProbe"];
        assert!(
            liveness["grpc"].is_badvalue(),
            "liveness on grpc.health.v1 restarts pods in an outage"
        );
        let exec_live = liveness["exec"]["command"]
            .as_vec()
            .is_some_and(|c| c.iter().any(|a| a.as_str() == Some("--liveness")));
        let http_live = liveness["httpGet"]["path"].as_str() == Some("/healthz");
        assert!(exec_live || http_live, "liveness: {liveness:?}");
        // Readiness must follow the back ends, or an outage never takes a pod out of service.
        let readiness = &self.container()["readinessProbe"];
        assert!(
            !readiness["exec"]["command"]
                .as_vec()
                .is_some_and(|c| c.iter().any(|a| a.as_str() == Some("--liveness"))),
            "readiness with --liveness ignores the back ends"
        );
        // The health check gives up after 2 s: an exec probe must wait longer than that.
        for probe in [liveness, readiness] {
            if !probe["exec"].is_badvalue() {
                assert!(
                    probe["timeoutSeconds"].as_i64().is_some_and(|t| t > 2),
                    "an exec probe's timeoutSeconds must exceed the health check's 2 s: {probe:?}"
                );
            }
        }
        // Every literal value parses as authd parses it (a typo would stop start-up).
        let mut argv = vec!["authd".to_owned()];
        for entry in self.container()["env"].as_vec().unwrap() {
            let (Some(name), Some(value)) = (entry["name"].as_str(), entry["value"].as_str())
            else {
                continue;
            };
            if let Some(argument) = config
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|env| env == name))
            {
                argv.push(format!("--{}={value}", argument.get_long().unwrap()));
            }
        }
        if let Err(error) = <authd::config::Config as clap::Parser>::try_parse_from(&argv) {
            panic!("authd refuses the manifest's settings: {error}");
        }
        // Non-root, and the mounted Secrets readable by the pod's group (files are root-owned,
        // group fsGroup).
        let security = &self.pod()["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
        assert!(security["runAsUser"].as_i64().is_some_and(|uid| uid != 0));
        assert!(security["fsGroup"].as_i64().is_some());
        for volume in self.pod()["volumes"].as_vec().unwrap() {
            let Some(mode) = volume["secret"]["defaultMode"].as_i64() else {
                continue;
            };
            // YAML 1.1 (Kubernetes) reads `0440` as octal; a YAML 1.2 parser as 440.
            let mode = i64::from_str_radix(&mode.to_string(), 8).unwrap_or(mode);
            assert!(mode & 0o040 != 0, "{volume:?} is not group-readable");
        }
    }
}

#[test]
fn the_kubernetes_deployment_probes_health_and_mounts_the_keys_directory() {
    let manifest = Manifest::load("deploy/kubernetes/authd.yaml");
    manifest.assert_common();
    let container = manifest.container();
    assert_eq!(
        container["livenessProbe"]["httpGet"]["port"].as_str(),
        Some("http")
    );
    let readiness = &container["readinessProbe"]["grpc"];
    assert_eq!(
        readiness["port"].as_i64(),
        Some(port(authd::config::DEFAULT_LISTEN_ADDR))
    );
    assert_eq!(
        readiness["service"].as_str(),
        Some(authd::api::health::SERVICE_NAME)
    );
}

#[test]
fn the_kubernetes_tls_variant_serves_its_certificate_and_probes_over_mutual_tls() {
    let manifest = Manifest::load("deploy/kubernetes/authd-tls.yaml");
    manifest.assert_common();
    let certificate = &manifest.kind("Certificate")["spec"];
    let secret = certificate["secretName"].as_str().unwrap();
    // Every certificate file authd or its health check reads is in the certificate's Secret,
    // under the names cert-manager writes.
    for (variable, file) in [
        ("AUTHD_TLS_CERT_FILE", "tls.crt"),
        ("AUTHD_TLS_KEY_FILE", "tls.key"),
        ("AUTHD_TLS_CLIENT_CA_FILE", "ca.crt"),
        ("AUTHD_HEALTHCHECK_CA_FILE", "ca.crt"),
        ("AUTHD_HEALTHCHECK_CLIENT_CERT_FILE", "tls.crt"),
        ("AUTHD_HEALTHCHECK_CLIENT_KEY_FILE", "tls.key"),
    ] {
        let path = manifest
            .env(variable)
            .unwrap_or_else(|| panic!("{variable}"));
        assert!(path.ends_with(&format!("/{file}")), "{variable}={path}");
        assert_eq!(
            manifest.volume_holding(&path)["secret"]["secretName"].as_str(),
            Some(secret),
            "{variable}"
        );
    }
    let redis_ca = manifest
        .env("AUTHD_REDIS_CA_FILE")
        .expect("AUTHD_REDIS_CA_FILE");
    assert!(!manifest.volume_holding(&redis_ca)["secret"].is_badvalue());
    // The health check connects to "localhost" unless told the name the certificate carries;
    // it presents the pod's certificate, which must then be good for client auth too.
    let names: Vec<&str> = certificate["dnsNames"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let domain = manifest
        .env("AUTHD_HEALTHCHECK_DOMAIN")
        .unwrap_or_else(|| "localhost".into());
    assert!(
        names.contains(&domain.as_str()),
        "{domain} not in {names:?}"
    );
    let usages: Vec<&str> = certificate["usages"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(usages.contains(&"server auth") && usages.contains(&"client auth"));
    // Values cert-manager accepts.
    let key = &certificate["privateKey"];
    assert!(matches!(
        key["algorithm"].as_str(),
        Some("RSA" | "ECDSA" | "Ed25519")
    ));
    assert!(matches!(
        key["encoding"].as_str(),
        None | Some("PKCS1" | "PKCS8")
    ));
    assert!(matches!(
        certificate["issuerRef"]["kind"].as_str(),
        Some("Issuer" | "ClusterIssuer")
    ));
    let public_url = manifest.env("AUTHD_PUBLIC_URL").unwrap();
    assert!(public_url.starts_with("https://"), "{public_url}");
    // Neither of Kubernetes' own probes can present a client certificate: both run the health
    // check binary, where the Dockerfile installs it.
    let dockerfile =
        std::fs::read_to_string(format!("{}/Dockerfile", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for probe in ["livenessProbe", "readinessProbe"] {
        let command = &manifest.container()[probe]["exec"]["command"];
        let binary = command[0]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}: exec"));
        let (directory, name) = binary.rsplit_once('/').unwrap();
        assert_eq!(name, "authd-healthcheck");
        assert!(
            dockerfile.lines().any(|line| line.starts_with("COPY")
                && line.contains(name)
                && line.trim_end().ends_with(&format!("{directory}/"))),
            "the Dockerfile does not install {binary}"
        );
    }
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

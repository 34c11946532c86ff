"""The configurations a load test runs: Envoy bootstraps (with
__LISTENER__, __ADMIN__ and __WASM__ for what each run decides), nginx
configs, the compose harness's files. Every filter's plugin configuration
is the sample's in envoy/ (`sample_plugin`), changed only where a load test
must: the rate limits raised so that no request of the load is refused, the
sticky backends made the run's demo backends."""
import copy
import json

from .env import SAMPLES, WASM


def sample_plugin(name):
    """The plugin configuration in envoy/<name>.yaml: the JSON of its first
    `value: |` block (the Wasm filter's `configuration`)."""
    lines = (SAMPLES / f"{name}.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "value: |":
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for rest in lines[i + 1:]:
            if rest.strip() and len(rest) - len(rest.lstrip()) <= indent:
                break
            block.append(rest)
        return json.loads("\n".join(block))
    raise ValueError(f"envoy/{name}.yaml has no plugin configuration")


def sample_stats_tags(name="bundle"):
    """The `stats_config.stats_tags` of envoy/<name>.yaml (each `tag_name`
    and its `regex`): the labels the filters' metrics get in Prometheus."""
    tags, name_ = [], None
    for line in (SAMPLES / f"{name}.yaml").read_text().splitlines():
        text = line.strip()
        if text.startswith("- tag_name:"):
            name_ = text.split(":", 1)[1].strip()
        elif text.startswith("regex:") and name_:
            tags.append({"tag_name": name_, "regex": text.split(":", 1)[1].strip().strip("'")})
            name_ = None
    if not tags:
        raise ValueError(f"envoy/{name}.yaml has no stats_tags")
    return tags


def never_refusing(rate_limit):
    """A rate-limit configuration whose limits admit a million requests a
    second per key (the most the filter accepts): a load test measures the
    cost of deciding, not refusals."""
    rl = copy.deepcopy(rate_limit)
    for limit in rl["limits"]:
        limit["requests"], limit["period"] = 1_000_000, "1s"
        limit.pop("burst", None)
    return rl


def with_backends(sticky, addrs):
    """A sticky-session configuration onto the run's demo backends."""
    s = copy.deepcopy(sticky)
    s["backends"] = [{"name": n, "address": addrs[n]} for n in sorted(addrs)]
    return s


def nginx_configs(addrs):
    """The nginx rows: plain proxy_pass, the no-op filter, each filter and the
    four chained, each with the Envoy rows' plugin configuration (sticky
    sessions through a map onto one upstream per backend)."""
    names = sorted(addrs)
    f = filter_configs(addrs)
    shm = {"rate_limit": "shm_kv rate_limit 10m;", "circuit_breaker": "shm_kv circuit_breaker 2m;",
           "retry": "shm_kv retry_budget 1m;", "sticky_session": "shm_kv sticky_health 1m;", "noop_filter": "",
           "bundle": "shm_kv rate_limit 10m;\n    shm_kv circuit_breaker 2m;\n    shm_kv retry_budget 1m;\n"
                     "    shm_kv sticky_health 1m;"}
    upstreams = "upstream demo {\n" + "".join(f"        server {addrs[n]};\n" for n in names) + "    }\n"
    upstreams += "".join(f"    upstream backend_{n} {{ server {addrs[n]}; }}\n" for n in names)
    sticky_map = ("map $http_x_sticky_upstream $sticky_backend {\n" +
                  "".join(f"        {addrs[n]} backend_{n};\n" for n in names) + "        default demo;\n    }\n")

    def conf(filters, sticky=False):
        modules = "".join(f"    module {file} {WASM / (file + '.wasm')};\n    {shm[file]}\n" for file, _ in filters)
        wasm_block = f"wasm {{\n{modules}}}\n" if filters else ""
        directives = "".join(f"            proxy_wasm {file} '{json.dumps(cfg)}';\n" for file, cfg in filters)
        target = "$sticky_backend" if sticky else "demo"
        return (f"daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log stderr info;\npid __PID__;\n"
                f"events {{}}\n{wasm_block}http {{\n    access_log off;\n    {upstreams}    {sticky_map}"
                f"    server {{\n        listen 127.0.0.1:__LISTENER__;\n        location / {{\n{directives}"
                f"            proxy_pass http://{target};\n            proxy_set_header Host $host;\n"
                f"        }}\n    }}\n}}\n")

    each = [("rate_limit", f["rate_limit"]), ("circuit_breaker", f["circuit_breaker"]), ("retry", f["retry"]),
            ("sticky_session", f["sticky"])]
    return {
        "nginx-proxy": conf([]),
        "nginx-noop-wasm": conf([("noop_filter", {})]),
        "nginx-rate-limit": conf(each[0:1]),
        "nginx-circuit-breaker": conf(each[1:2]),
        "nginx-retry": conf(each[2:3]),
        "nginx-sticky-session": conf(each[3:4], sticky=True),
        "nginx-chain-of-four": conf(each, sticky=True),
        "nginx-bundle-of-four": conf([("bundle", bundle_config(addrs))], sticky=True),
    }


def sa(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


def endpoints(addrs):
    return [{"endpoint": {"address": sa(int(a.rsplit(":", 1)[1]), a.rsplit(":", 1)[0])}} for a in addrs]


def cluster(addrs, **extra):
    c = {"name": "demo", "connect_timeout": "1s", "type": "STATIC", "lb_policy": "ROUND_ROBIN",
         "load_assignment": {"cluster_name": "demo", "endpoints": [{"lb_endpoints": endpoints(addrs)}]},
         # Envoy's default of 3 concurrent retries would cap retries before any policy does.
         "circuit_breakers": {"thresholds": [{"max_retries": 10000}]}}
    c.update(extra)
    return c


def override_host_cluster(addrs):
    c = cluster(addrs)
    del c["lb_policy"]
    c["load_balancing_policy"] = {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
            "override_host_sources": [{"header": "x-sticky-upstream"}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.round_robin",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"}}}]}}}}]}
    return c


def route(**extra):
    r = {"match": {"prefix": "/"}, "route": {"cluster": "demo", "timeout": "5s"}}
    r["route"].update(extra)
    return r


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def wasm(name, file, config):
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": name, "root_id": name, "failure_policy": "FAIL_RELOAD",
                   "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": f"__WASM__/{file}.wasm"}}},
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(config)}}}}


def dynamic_module(policy, config):
    """The native build's filter (filters/native, libresilience.so) serving
    `policy` with the same JSON configuration as its Wasm module."""
    return {"name": "envoy.filters.http.dynamic_modules", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": "resilience", "module": {"local": {"filename": "__NATIVE_MODULE__"}}},
        "filter_name": policy,
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)}}}


def bootstrap(filters, clusters, rt, direct_response=False):
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "ingress", "use_remote_address": True, "skip_xff_append": True,
           "http_protocol_options": {"accept_http_10": True}, "delayed_close_timeout": "0s",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "direct_response": {"status": 200}} if direct_response else rt]}]},
           "http_filters": filters + [ROUTER]}
    return {"admin": {"address": sa("__ADMIN__")},
            "static_resources": {
                "listeners": [{"name": "ingress", "address": sa("__LISTENER__"),
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": clusters}}


def filter_configs(addrs):
    """Each filter's sample configuration (envoy/<filter>.yaml), as a load
    test runs it."""
    return {
        "rate_limit": never_refusing(sample_plugin("rate-limit")),
        "circuit_breaker": sample_plugin("circuit-breaker"),
        "retry": sample_plugin("retry"),
        "sticky": with_backends(sample_plugin("sticky-session"), addrs),
    }


def bundle_config(addrs, **override):
    """The bundle's sample configuration (envoy/bundle.yaml), as a load test
    runs it, sections replaced by `override`."""
    b = sample_plugin("bundle")
    b["rate_limit"] = never_refusing(b["rate_limit"])
    b["sticky_session"] = with_backends(b["sticky_session"], addrs)
    return {**b, **override}


# The engine's limits for the global-limit row: a billion a second per
# client never refuses; what is measured is the cost of asking.
RATE_LIMIT_SERVICE_LIMITS = ("domain: bench\ndescriptors:\n  - key: generic_key\n    value: all\n    descriptors:\n"
                             "      - key: remote_address\n        rate_limit: { unit: second, requests_per_unit: 1000000000 }\n")


def global_limit_config(rls_port):
    return {"limits": [{"name": "all", "requests": 1000000, "period": "1s", "key": "client_ip", "scope": "global"}],
            "global": {"cluster": "ratelimit", "domain": "bench", "timeout": "1s"}, "headers": "draft"}


def rls_cluster(port, host="127.0.0.1"):
    return {"name": "ratelimit", "connect_timeout": "1s", "type": "STATIC",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "ratelimit", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sa(port, host)}}]}]}}


# How the sticky and bundle rows route: a retry policy with the
# previous-hosts predicate (with override_host_cluster).
RETRY_ROUTE = {"retry_policy": {"retry_on": "connect-failure,reset", "num_retries": 2,
                                "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                                "host_selection_retry_max_attempts": 5}}


def configs(addrs, rls_port=None):
    a = list(addrs.values())
    f = filter_configs(addrs)
    local_rl = {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "lrl",
        "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "lrl_on", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"runtime_key": "lrl_enf", "default_value": {"numerator": 100, "denominator": "HUNDRED"}}}}
    return {
        "router": bootstrap([], [cluster(a)], route()),
        # Routing as the sticky and bundle rows route (override_host with its
        # fallback, a retry policy with the previous-hosts predicate), with
        # no filter: what those rows add over router-only without any policy.
        "router-override-host": bootstrap([], [override_host_cluster(a)], route(**RETRY_ROUTE)),
        "noop-wasm": bootstrap([wasm("noop", "noop_filter", {})], [cluster(a)], route()),
        "native-local-ratelimit": bootstrap([local_rl], [cluster(a)], route()),
        "native-ring-hash-cookie": bootstrap([], [cluster(a, lb_policy="RING_HASH")],
                                             route(hash_policy=[{"cookie": {"name": "sticky", "ttl": "3600s"}}])),
        "native-retry-policy": bootstrap([], [cluster(a)], route(retry_policy={"retry_on": "5xx,reset,connect-failure", "num_retries": 3})),
        "native-outlier-detection": bootstrap([], [cluster(a, outlier_detection={"consecutive_5xx": 5})], route()),
        "rate-limit": bootstrap([wasm("rate_limit", "rate_limit", f["rate_limit"])], [cluster(a)], route()),
        "circuit-breaker": bootstrap([wasm("circuit_breaker", "circuit_breaker", f["circuit_breaker"])], [cluster(a)], route()),
        "retry": bootstrap([wasm("retry", "retry", f["retry"])], [cluster(a)], route()),
        "sticky-session": bootstrap([wasm("sticky", "sticky_session", f["sticky"])], [override_host_cluster(a)], route(**RETRY_ROUTE)),
        "bundle-of-four": bootstrap([wasm("bundle", "bundle", bundle_config(addrs))],
                                    [override_host_cluster(a)], route(**RETRY_ROUTE)),
        # The breaker on consecutive failures alone (no window, no expression).
        "circuit-breaker-consecutive": bootstrap([wasm("circuit_breaker", "circuit_breaker",
                                                       {"key": "cluster", "consecutive_failures": 5})], [cluster(a)], route()),
        "bundle-of-four-consecutive-breaker": bootstrap(
            [wasm("bundle", "bundle", bundle_config(addrs, circuit_breaker={"key": "cluster", "consecutive_failures": 5}))],
            [override_host_cluster(a)], route(**RETRY_ROUTE)),
        # Envoy's native equivalents of the four, together on one route.
        "native-chain-of-four": bootstrap([local_rl], [cluster(a, lb_policy="RING_HASH", outlier_detection={"consecutive_5xx": 5})],
                                          route(hash_policy=[{"cookie": {"name": "sticky", "ttl": "3600s"}}],
                                                retry_policy={"retry_on": "5xx,reset,connect-failure", "num_retries": 3})),
        "chain-of-four": bootstrap([wasm("rate_limit", "rate_limit", f["rate_limit"]),
                                    wasm("circuit_breaker", "circuit_breaker", f["circuit_breaker"]),
                                    wasm("retry", "retry", f["retry"]),
                                    wasm("sticky", "sticky_session", f["sticky"])],
                                   [override_host_cluster(a)], route(**RETRY_ROUTE)),
        # The same policies and configurations as the rows above, with the
        # native build (a dynamic module) in place of each Wasm module.
        "dm-rate-limit": bootstrap([dynamic_module("rate_limit", f["rate_limit"])], [cluster(a)], route()),
        "dm-circuit-breaker": bootstrap([dynamic_module("circuit_breaker", f["circuit_breaker"])], [cluster(a)], route()),
        "dm-retry": bootstrap([dynamic_module("retry", f["retry"])], [cluster(a)], route()),
        "dm-sticky-session": bootstrap([dynamic_module("sticky_session", f["sticky"])], [override_host_cluster(a)],
                                       route(**RETRY_ROUTE)),
        "dm-bundle-of-four": bootstrap([dynamic_module("bundle", bundle_config(addrs))],
                                       [override_host_cluster(a)], route(**RETRY_ROUTE)),
        **({"rate-limit-global": bootstrap([wasm("rate_limit", "rate_limit", global_limit_config(rls_port))],
                                           [cluster(a), rls_cluster(rls_port)], route()),
            # Envoy's own rate limit filter asking the same service with the same descriptor.
            "native-ratelimit-service": bootstrap(
                [{"name": "envoy.filters.http.ratelimit", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": "bench", "timeout": "1s",
                    "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                                           "transport_api_version": "V3"}}}],
                [cluster(a), rls_cluster(rls_port)],
                route(rate_limits=[{"actions": [{"generic_key": {"descriptor_value": "all"}}, {"remote_address": {}}]}]))}
           if rls_port else {}),
    }


# The demo backend's LLM-shaped answers (tools/demo-backend: /v1/...), 100
# tokens each: a JSON answer, and one streamed as server-sent events (3
# content events, then the usage). wrk asks for "/", which the route rewrites.
LLM_JSON = "/v1/chat/completions?tokens=100&"
LLM_SSE = "/v1/chat/completions?tokens=100&stream=1&"


def token_limit(source="response_body"):
    """A never-refusing limit of a million tokens a second per API key
    (wrk sends none: one key), charged from the answer's usage."""
    cost = {"response_body": "usage.total_tokens"} if source == "response_body" else 1
    return {"limits": [{"name": "tokens", "requests": 1000000, "period": "1s", "burst": 1000000,
                        "key": "header:x-api-key", "cost": cost}]}


def llm_configs(addrs):
    """Limits by cost, each row paired with router-only on the same answers
    (LLM_BASE): a token limit reading JSON answers and event streams, in
    both builds, and the plain request limit on the same JSON answers."""
    a = list(addrs.values())
    f = filter_configs(addrs)
    on = lambda path, filters: bootstrap(filters, [cluster(a)], route(prefix_rewrite=path))
    return {
        "router-llm-json": on(LLM_JSON, []),
        "router-llm-sse": on(LLM_SSE, []),
        "rate-limit-llm-json": on(LLM_JSON, [wasm("rate_limit", "rate_limit", f["rate_limit"])]),
        "token-limit-json": on(LLM_JSON, [wasm("rate_limit", "rate_limit", token_limit())]),
        "token-limit-sse": on(LLM_SSE, [wasm("rate_limit", "rate_limit", token_limit())]),
        "dm-rate-limit-llm-json": on(LLM_JSON, [dynamic_module("rate_limit", f["rate_limit"])]),
        "dm-token-limit-json": on(LLM_JSON, [dynamic_module("rate_limit", token_limit())]),
        "dm-token-limit-sse": on(LLM_SSE, [dynamic_module("rate_limit", token_limit())]),
    }


# Each limits-by-cost row's baseline: router-only on the same answers.
LLM_BASE = {"rate-limit-llm-json": "router-llm-json", "token-limit-json": "router-llm-json",
            "token-limit-sse": "router-llm-sse", "dm-rate-limit-llm-json": "router-llm-json",
            "dm-token-limit-json": "router-llm-json", "dm-token-limit-sse": "router-llm-sse"}


def probe_configs(addrs, repeat):
    """The compute probe (bench/compute-probe): each policy's and the bundle's
    whole request run `repeat` times on the in-memory recording host inside
    the VM, per real request; paired with repeat 0, the difference / repeat
    is one request's compute in V8."""
    a = list(addrs.values())
    f = filter_configs(addrs)
    inner = {"rate_limit": f["rate_limit"], "circuit_breaker": f["circuit_breaker"], "retry": f["retry"],
             "sticky_session": f["sticky"], "bundle": bundle_config(addrs), "noop": {}}
    return {f"probe-{name}-x{n}": bootstrap([wasm("probe", "compute_probe", {"filter": name, "repeat": n, "config": cfg})],
                                            [cluster(a)], route())
            for name, cfg in inner.items() for n in (0, repeat)} | {
        "probe-lean-breaker": bootstrap([wasm("probe", "compute_probe", {"filter": "lean", "repeat": 0})], [cluster(a)], route()),
        # The bundle's host calls (its sample configuration's, in order) with
        # none of its work, routed as the bundle row is.
        "probe-bundle-calls": bootstrap([wasm("probe", "compute_probe", {"filter": "bundle-calls", "repeat": 0})],
                                        [override_host_cluster(a)], route(**RETRY_ROUTE))}


NATIVE_OF = {"bundle-of-four": "native-chain-of-four", "chain-of-four": "native-chain-of-four",
             "rate-limit": "native-local-ratelimit", "rate-limit-global": "native-ratelimit-service", "sticky-session": "native-ring-hash-cookie",
             "retry": "native-retry-policy", "circuit-breaker": "native-outlier-detection",
             "dm-bundle-of-four": "native-chain-of-four", "dm-rate-limit": "native-local-ratelimit",
             "dm-sticky-session": "native-ring-hash-cookie", "dm-retry": "native-retry-policy",
             "dm-circuit-breaker": "native-outlier-detection"}


def rate_limit_scenario_config(addrs):
    return bootstrap([wasm("rate_limit", "rate_limit", {"limits": [{"name": "main", "requests": 100, "period": "1s",
                                                                    "burst": 50, "key": "client_ip"}]})],
                     [cluster(list(addrs.values()))], route())


# The compose harness's fixed addresses (host networking, docker-compose.yml).
COMPOSE_BACKENDS = {"a": "127.0.0.1:8081", "b": "127.0.0.1:8082", "c": "127.0.0.1:8083"}
COMPOSE_PORTS = {"envoy-chain.yaml": (10000, 9901), "envoy-rate-limit.yaml": (10001, 9902),
                 "envoy-global-rate-limit.yaml": (10002, 9903)}
COMPOSE_RLS_GRPC = 18081


def compose_files():
    """The compose harness's Envoy configs, generated from the same builders
    as the load test: fixed ports on 127.0.0.1, the .wasm files mounted at /wasm."""
    def render(name, cfg):
        listener, admin = COMPOSE_PORTS[name]
        text = json.dumps(cfg, indent=2)
        text = text.replace('"port_value": "__LISTENER__"', f'"port_value": {listener}')
        text = text.replace('"port_value": "__ADMIN__"', f'"port_value": {admin}')
        return text.replace("__WASM__", "/wasm") + "\n"
    global_cfg = bootstrap([wasm("rate_limit", "rate_limit", global_limit_config(COMPOSE_RLS_GRPC))],
                           [cluster(list(COMPOSE_BACKENDS.values())), rls_cluster(COMPOSE_RLS_GRPC)], route())
    return {"envoy-chain.yaml": render("envoy-chain.yaml", configs(COMPOSE_BACKENDS)["chain-of-four"]),
            "envoy-rate-limit.yaml": render("envoy-rate-limit.yaml", rate_limit_scenario_config(COMPOSE_BACKENDS)),
            "envoy-global-rate-limit.yaml": render("envoy-global-rate-limit.yaml", global_cfg),
            "limits-bench.yaml": RATE_LIMIT_SERVICE_LIMITS}



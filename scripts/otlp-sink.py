#!/usr/bin/env python3
"""A minimal OTLP trace receiver, gRPC and (with --listen-http) HTTP
protobuf on /v1/traces: every span it receives becomes one JSON line in
--out, {"service", "name", "trace_id", "parent_span_id", "attributes"},
attribute values as text. For `make run CONFIG=observability` (point a real collector
at the same port instead, if you have one) and the trace tests
(tests/observability.rs), which read the file.

    .venv/bin/python scripts/otlp-sink.py --listen 127.0.0.1:4317 --out run/spans.jsonl
"""
import argparse
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def text(value):
    """An AnyValue as text: the value of whichever field is set."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    v = getattr(value, kind)
    if kind == "bool_value":
        return "true" if v else "false"
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return str(v)
    return str(v)


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        self.write(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def write(self, request):
        lines = []
        for rs in request.resource_spans:
            service = ""
            for kv in rs.resource.attributes:
                if kv.key == "service.name":
                    service = text(kv.value)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attributes = {kv.key: text(kv.value) for kv in span.attributes}
                    lines.append(json.dumps({
                        "service": service,
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": attributes,
                    }, sort_keys=True))
        with self.lock:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()


def http_server(listen, sink):
    """OTLP/HTTP: POST /v1/traces, an ExportTraceServiceRequest in protobuf."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            try:
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            except Exception:  # a body that is not the message: 400, as a collector answers
                self.send_response(400)
                self.end_headers()
                return
            sink.write(request)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    host, port = listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4317")
    parser.add_argument("--listen-http", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = open(args.out, "a", encoding="utf-8")
    sink = Sink(out)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    if args.listen_http:
        http_server(args.listen_http, sink)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"otlp-sink: cannot listen on {args.listen}")
    server.start()
    print(f"otlp-sink: listening on {args.listen}, spans to {args.out}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1)


if __name__ == "__main__":
    main()

"""A stand-in for `neocloud worker` in the orchestrator's tests: the same
arguments (--spec, --port-file), the same health endpoints, SIGTERM drains.
Behaviour comes from the model's annotation "fake/mode": "ok" (default),
"crash" (exit 3 at once) or "unready" (never ready)."""
import http.server
import json
import os
import signal
import sys
import threading

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
spec = json.load(open(args["--spec"]))
mode = spec["model"]["metadata"].get("annotations", {}).get("fake/mode", "ok")
print(f"fake worker {os.getpid()} for {spec['service']} mode={mode} "
      f"threads={os.environ.get('RAYON_NUM_THREADS')}", flush=True)
if mode == "crash":
    sys.exit(3)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/v2/health/live" or (self.path == "/v2/health/ready" and mode != "unready")
        body = b"{}"
        self.send_response(200 if ok else 503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
tmp = args["--port-file"] + ".tmp"
with open(tmp, "w") as f:
    f.write(f"127.0.0.1:{server.server_address[1]}")
os.rename(tmp, args["--port-file"])


def term(*_):
    print("SIGTERM: drained", flush=True)
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, term)
server.serve_forever()
print("exiting 0", flush=True)

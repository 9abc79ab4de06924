"""`shopfloor sync`: the capacity push on its own, to the platform simulator, over real HTTP; one pushing process
per data dir."""

import base64
import json
import signal
import urllib.request

from simulators.broker import free_port
from tests.e2e.conftest import Proc, wait_until


def get(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_sync_pushes_verified_events_and_a_second_one_is_refused(make_system, tmp_path):
    secret = tmp_path / "platform-secret"
    secret.write_text("whsec_" + base64.b64encode(b"a-key-for-the-sync-test-000001").decode())
    platform_port, sync_port = free_port(), free_port()

    def push_to_platform(data):
        data["capacity"] = {"push": {"in_dashboard": False, "endpoints": [{
            "name": "platform", "url": f"http://127.0.0.1:{platform_port}/events", "secret_files": [str(secret)]}]}}

    system = make_system(push_to_platform)
    platform = Proc("platform", ["simulate", "platform", "--port", str(platform_port), "--secret-file", str(secret)],
                    tmp_path).start(ready="platform simulator listening")
    sync = Proc("sync", ["sync", "--config", str(system.config), "--port", str(sync_port)], tmp_path)
    system.procs += [platform, sync]
    sync.start(ready="shopfloor sync: pushing capacity")
    state = wait_until(lambda: (s := get(f"http://127.0.0.1:{platform_port}/state")) and len(s["lines"]) == 2 and s,
                       30, "the platform to hold both lines")
    assert not state["rejected"] and state["accepted"] == 2
    health = wait_until(lambda: (h := get(f"http://127.0.0.1:{sync_port}/healthz"))["push"]["endpoints"][0]
                        ["delivered"] == 2 and h, 10, "sync's health to show the deliveries")
    assert health["status"] == "ok" and health["push"]["endpoints"][0]["queue"] == 0
    second = Proc("sync-2", ["sync", "--config", str(system.config), "--port", str(free_port())], tmp_path).start()
    assert second.popen.wait(30) == 2 and "pushed by another process" in second.log()
    assert sync.stop(signal.SIGTERM) == 0

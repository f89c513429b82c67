"""`?fal_webhook=URL`: when a job ends (COMPLETED, FAILED or CANCELLED), POST its outcome there, as fal does:

    {"request_id", "gateway_request_id", "status": "OK" | "ERROR", "payload": <the result body>, "error"?: str}

The URL passed the URL policy at submission (resolved names included); delivery dials through the intake fetcher's
guarded connection, so the addresses actually connected to are vetted again, and redirects are not followed.
Each delivery is claimed in the database (one replica sends it), tried `webhook_attempts` times with doubling
pauses, and its outcome recorded on the job (`webhook`: state, attempts, last answer)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

from ltxtrain.intake.fetch import guarded_opener, redact_url

from .config import ServeConfig
from .store import JobRecord, JobStore

log = logging.getLogger("ltxtrain.serve")


class Webhooks:
    def __init__(self, config: ServeConfig, store: JobStore, payload_for):
        """`payload_for(job, base_url) -> (ok: bool, body: dict, error: str | None)` builds what is sent."""
        self.config = config
        self.store = store
        self.payload_for = payload_for
        self._threads: list[threading.Thread] = []

    def pump(self) -> None:
        """Start a delivery for every finished job whose webhook is pending (claimed, so sent once)."""
        self._threads = [t for t in self._threads if t.is_alive()]
        for job in self.store.claim_webhooks():
            t = threading.Thread(target=self.deliver, args=(job,), name=f"webhook-{job.id}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, end - time.monotonic()))

    def deliver(self, job: JobRecord) -> bool:
        hook = job.webhook or {}
        ok, payload, error = self.payload_for(job, hook.get("base", ""))
        body = {"request_id": job.id, "gateway_request_id": job.id, "status": "OK" if ok else "ERROR",
                "payload": payload}
        if error:
            body["error"] = error
        data = json.dumps(body).encode()
        opener = guarded_opener(self.config.allow_private_urls, follow_redirects=False)
        last = ""
        for attempt in range(1, self.config.webhook_attempts + 1):
            req = urllib.request.Request(hook["url"], data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "ltxtrain/1"})
            try:
                with opener.open(req, timeout=self.config.webhook_timeout_s) as resp:
                    last = f"HTTP {resp.status}"
                    if 200 <= resp.status < 300:
                        self.store.update_webhook(job.id, state="delivered", attempts=attempt, last=last,
                                                  delivered_at=time.time())
                        return True
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                exc.close()
            except Exception as exc:  # noqa: BLE001 - refused address, connection errors, timeouts
                last = " ".join(str(getattr(exc, "reason", None) or exc).split())[:300]
            self.store.update_webhook(job.id, attempts=attempt, last=last)
            if attempt < self.config.webhook_attempts:
                time.sleep(self.config.webhook_retry_s * 2 ** (attempt - 1))
        log.warning("webhook of %s to %s failed after %d tries: %s", job.id, redact_url(hook["url"]),
                    self.config.webhook_attempts, last)
        self.store.update_webhook(job.id, state="failed")
        return False

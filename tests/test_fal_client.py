"""The public `fal-client` (1.0.3) against our Serve deployment over HTTPS, as a fal user switches: FAL_KEY and
FAL_QUEUE_RUN_HOST set, the self-signed certificate made here trusted through SSL_CERT_FILE. One tiny t2v training
that succeeds (subscribe with logs → a result with `lora_file`; status, result and cancel by app id) and one whose
dataset is rejected at once (it reaches the client as an error carrying the 422 details)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_serve import ALICE, ROOT, SMALL, _free_port, datasets, make_config  # noqa: E402,F401

# Runs in a fresh interpreter: fal_client reads FAL_QUEUE_RUN_HOST when it is imported.
CLIENT = r"""
import json, sys, time
import fal_client

app, good, bad = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {"updates": []}

failing = fal_client.submit(app, bad)
try:
    failing.get(interval=0.5)
    out["failing"] = "no error"
except fal_client.client.FalClientHTTPError as exc:
    out["failing"] = {"status_code": exc.status_code, "detail": exc.message}
st = fal_client.status(app, failing.request_id)
out["failing_status"] = {"type": type(st).__name__, "error": st.error, "error_type": st.error_type}

def on_update(update):
    out["updates"].append({"type": type(update).__name__, "logs": getattr(update, "logs", None),
                           "position": getattr(update, "position", None)})

ids = []
result = fal_client.subscribe(app, good, with_logs=True, on_queue_update=on_update, on_enqueue=ids.append,
                              interval=1.0)
out["result"] = result
rid = ids[0]
st = fal_client.status(app, rid, with_logs=True)
out["status"] = {"type": type(st).__name__, "n_logs": len(st.logs or []), "error": st.error}
out["result_by_id"] = fal_client.result(app, rid)["lora_file"]
t0 = time.monotonic()
try:
    fal_client.cancel(app, rid)
    out["cancel"] = "no error"
except fal_client.client.FalClientHTTPError as exc:
    out["cancel"] = {"status_code": exc.status_code, "seconds": time.monotonic() - t0}
print("RESULT " + json.dumps(out))
"""


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.mark.ray
def test_fal_client_against_a_tls_deployment(ray_cluster, tiny_model, datasets, tmp_path):  # noqa: F811
    from ray import serve

    cert, key = _self_signed(tmp_path)
    port = _free_port()
    config = make_config(ray_cluster, tmp_path / "svc", scheduler_interval_s=0.5)
    cfg_file = tmp_path / "serve.json"
    cfg_file.write_text(json.dumps(config.to_dict()))
    serve.shutdown()  # Serve's HTTP options are fixed when it starts: this test's proxy speaks TLS
    deploy = subprocess.run([sys.executable, "-m", "serve.deploy", "--address", ray_cluster["address"],
                             "--host", "127.0.0.1", "--port", str(port), "--config", str(cfg_file),
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
                            cwd=ROOT, env=ray_cluster["env"], capture_output=True, text=True, timeout=300)
    try:
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        assert json.loads(deploy.stdout.strip().splitlines()[-1])["url"] == f"https://127.0.0.1:{port}/"
        env = {**ray_cluster["env"], "FAL_KEY": ALICE["Authorization"].split()[1],
               "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}", "SSL_CERT_FILE": str(cert)}
        good = {"training_data_url": datasets["t2v"], **SMALL}
        bad = {"training_data_url": datasets["empty"], **SMALL}
        proc = subprocess.run([sys.executable, "-c", CLIENT, "ltxtrain/trainer/t2v", json.dumps(good),
                               json.dumps(bad)], env=env, capture_output=True, text=True, timeout=540)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
        out = json.loads(lines[-1][len("RESULT "):])

        # the failing job reached the client as an error with the 422 details, and as a finished request
        assert out["failing"]["status_code"] == 422, out["failing"]
        assert out["failing"]["detail"][0]["loc"][:2] == ["body", "training_data_url"], out["failing"]
        assert out["failing_status"]["type"] == "Completed"
        assert out["failing_status"]["error_type"] == "validation_error" and out["failing_status"]["error"]

        # the training: queue updates with log objects, then the result with the LoRA
        kinds = [u["type"] for u in out["updates"]]
        assert kinds[-1] == "Completed" and "InProgress" in kinds, kinds
        logs = [e for u in out["updates"] if u["logs"] for e in u["logs"]]
        assert logs and all({"message", "level", "source", "timestamp"} <= set(e) for e in logs)
        assert any("preprocessed 2 samples" in e["message"] for e in logs)
        lora = out["result"]["lora_file"]
        assert lora["url"].startswith(f"https://127.0.0.1:{port}/requests/") and lora["file_size"] > 0
        assert out["result"]["billing_units"] == 100
        assert out["status"]["type"] == "Completed" and out["status"]["n_logs"] > 0 and out["status"]["error"] is None
        assert out["result_by_id"] == lora
        # cancelling a finished request fails at once (400), not after the client's 409 retries
        assert out["cancel"]["status_code"] == 400 and out["cancel"]["seconds"] < 5, out["cancel"]
    finally:
        serve.shutdown()

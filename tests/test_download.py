"""Tests for the data that fetches itself: lnexp.data.fetch, the MNIST cache, and the download
commands for MNIST, SentEval and the books.

Nothing here touches the internet: files are served by a local HTTP server on 127.0.0.1 that
can also fail in chosen ways (an HTTP 404, a connection cut short, a slow trickle to kill a
download in the middle). Tests of the MNIST cache run on tiny IDX files whose digests are pinned
in place of the real ones; those that need the real files take them from $LNEXP_DATA/mnist and
skip without them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, story_sentence

from lnexp import cli
from lnexp.data import cache, download, gutenberg, mnist, senteval, senteval_sources, text
from lnexp.data.fetch import USER_AGENT, DownloadError
from lnexp.data.fetch import download as fetch_file
from lnexp.errors import UserError

MNIST_FILES = [f"{stem}.gz" for stem in mnist.SHA256]
QUICK_S = 10  # "Within seconds": every failure here must be reported faster than this.


class Server:
    """A local HTTP server of ``files`` (URL path -> bytes) that fails where ``faults`` says:
    ``"404"``, ``"cut"`` (declares the whole file, sends half, closes) or ``"slow"`` (a trickle
    of 4 KiB every 50 ms). ``requests`` lists the paths asked for, ``user_agents`` the agents."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.requests: list[str] = []
        self.user_agents: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.unquote(self.path)
                server.requests.append(path)
                server.user_agents.append(self.headers.get("User-Agent", ""))
                fault = server.faults.get(path)
                data = server.files.get(path)
                if data is None or fault == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if fault == "cut":
                        self.wfile.write(data[: len(data) // 2])
                    elif fault == "slow":
                        for i in range(0, len(data), 4096):
                            self.wfile.write(data[i : i + 4096])
                            self.wfile.flush()
                            time.sleep(0.05)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # The client went away (killed, in the tests that kill it).

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty data root (``$LNEXP_DATA``); proxies off, so 127.0.0.1 is asked directly."""
    root = tmp_path / "data_home"
    monkeypatch.setenv("LNEXP_DATA", str(root))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def tiny_served(server, tiny_mnist_dir, monkeypatch) -> Path:
    """The tiny MNIST files on ``server``, with their digests pinned in place of the real ones."""
    digests = {}
    for name in MNIST_FILES:
        data = (tiny_mnist_dir / name).read_bytes()
        server.files["/" + name] = data
        digests[name.removesuffix(".gz")] = hashlib.sha256(gzip.decompress(data)).hexdigest()
    monkeypatch.setattr(mnist, "SHA256", digests)
    return tiny_mnist_dir


def trusted(directory: Path) -> list[str]:
    """The files of ``directory`` that a later run would read (everything but ``.part``)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".part"))


def subprocess_env() -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu")


def run_download(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lnexp.data.download", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def download_here(*args: str) -> int:
    """``python -m lnexp.data.download ARGS`` in this process (capsys sees what it prints): its
    flags parsed as the command line parses them; returns the exit status."""
    argv = ["lnexp.data.download", *args]
    return cli.call(download.main, argv, download.define_flags, takes_arguments=True)


def test_download_usage_errors_are_one_paragraph_and_status_2(tmp_path, capsys):
    cases = [
        ((), "Name the data set to fetch: one of mnist, senteval, books"),
        (("mnst",), "Unknown data set 'mnst'"),
        (("mnist", str(tmp_path), "extra"), "Unexpected arguments: extra"),
        (("mnist", "--tasks", "MR"), "--tasks: not an option of mnist (it takes --url)"),
        (("books", "--pause=soon"), "flag --pause=soon: 'soon' is not a number"),
        (("senteval", "--urll=x"), "Unknown command line flag 'urll'"),
    ]
    for args, words in cases:
        assert download_here(*args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # Nothing was fetched.


def run_pimnist(workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """A tiny PI-MNIST run (1 epoch of 2 steps, a 16-unit MLP) with no data flag."""
    command = [
        sys.executable,
        "-m",
        "lnexp.main",
        "--config=configs/pimnist.py",
        f"--workdir={workdir}",
        "--config.num_epochs=1",
        "--config.data.limit_train=256",
        "--config.model.hidden_sizes=(16,)",
        *overrides,
    ]
    return subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


def error_paragraph(result: subprocess.CompletedProcess) -> str:
    """The ``error:`` paragraph of a command that failed cleanly (exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "error: " in result.stderr, result.stderr
    return result.stderr[result.stderr.index("error: ") :]


# ---------------------------------------------------------------------------------------------
# Where the data lives.


def test_data_root_follows_lnexp_data_then_the_cache(monkeypatch, tmp_path):
    for var in ("LNEXP_DATA", "LNEXP_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert cache.dataset_dir("mnist") == Path.home() / ".cache" / "lnexp" / "data" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.data_root() == tmp_path / "xdg" / "lnexp" / "data"
    monkeypatch.setenv("LNEXP_CACHE", str(tmp_path / "c"))
    assert cache.data_root() == tmp_path / "c" / "data"
    assert text.default_cache_dir() == tmp_path / "c"  # Processed corpora beside the data.
    monkeypatch.setenv("LNEXP_DATA", str(tmp_path / "d"))
    assert cache.dataset_dir("books") == tmp_path / "d" / "books"


@pytest.mark.parametrize("name", ["pimnist", "seqmnist"])
def test_mnist_configs_default_to_the_cache(name):
    from conftest import load_config

    config = load_config(name)
    assert config.data.source == "cache"
    assert config.data.url == mnist.DEFAULT_URL
    assert config.data.dir is None


# ---------------------------------------------------------------------------------------------
# lnexp.data.fetch: one file, atomically.


def test_fetch_writes_atomically_and_names_lnexp(server, data_home, tmp_path):
    server.files["/a.txt"] = b"hello" * 1000
    out = tmp_path / "out"
    out.mkdir()
    assert fetch_file(server.url + "a.txt", out / "a.txt", progress=False) == 5000
    assert (out / "a.txt").read_bytes() == b"hello" * 1000
    assert server.user_agents == [USER_AGENT] and "lnexp" in USER_AGENT
    assert [p.name for p in out.iterdir()] == ["a.txt"]  # No .part left.


def test_fetch_check_rejects_and_leaves_nothing(server, data_home, tmp_path):
    server.files["/a.txt"] = b"not what we want"

    def check(path: Path) -> None:
        raise ValueError("wrong contents")

    with pytest.raises(DownloadError, match="a.txt: wrong contents") as info:
        fetch_file(server.url + "a.txt", tmp_path / "a.txt", check=check, progress=False)
    assert not info.value.unreachable
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fault, words, unreachable",
    [
        ("404", "HTTP error 404", False),
        ("cut", "the connection closed after 2,500 of 5,000 bytes", False),
        ("down", "connection refused", True),
    ],
)
def test_fetch_failures_are_quick_and_named(server, data_home, tmp_path, fault, words, unreachable):
    server.files["/a.txt"] = b"x" * 5000
    server.faults["/a.txt"] = fault
    url = (closed_port_url() if fault == "down" else server.url) + "a.txt"
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch_file(url, tmp_path / "a.txt", progress=False)
    assert time.monotonic() - start < QUICK_S
    assert str(info.value).startswith(url) and words in str(info.value)
    assert info.value.unreachable == unreachable
    assert list(tmp_path.iterdir()) == []


def test_fetch_file_urls_and_bad_schemes(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"\0\1\2")
    fetch_file(source.as_uri(), tmp_path / "copy.bin", progress=False)
    assert (tmp_path / "copy.bin").read_bytes() == b"\0\1\2"
    with pytest.raises(DownloadError, match="not an http"):
        fetch_file("ftp://example.org/x", tmp_path / "x", progress=False)


def test_fetch_removes_stale_part_files_only(server, data_home, tmp_path):
    server.files["/a.txt"] = b"new"
    stale = tmp_path / "a.txt.dead.part"
    fresh = tmp_path / "a.txt.live.part"
    other = tmp_path / "b.txt.dead.part"
    for part in (stale, fresh, other):
        part.write_bytes(b"half")
    for part in (stale, other):
        os.utime(part, (0, 0))
    fetch_file(server.url + "a.txt", tmp_path / "a.txt", progress=False)
    assert not stale.exists()
    assert fresh.exists() and other.exists()  # Maybe still being written; another file's.


# ---------------------------------------------------------------------------------------------
# MNIST from the data cache.


def test_fresh_cache_downloads_checks_and_then_reuses(server, tiny_served, data_home):
    data = mnist.load_mnist(source="cache", url=server.url, progress=False)
    assert sorted(server.requests) == sorted("/" + f for f in MNIST_FILES)
    assert trusted(data_home / "mnist") == sorted(MNIST_FILES)
    expected = mnist.load_mnist(tiny_served)
    for split in expected:
        for key in ("image", "label"):
            np.testing.assert_array_equal(data[split][key], expected[split][key])

    again = mnist.load_mnist(url=server.url, progress=False)  # source="cache" is the default
    assert len(server.requests) == 4  # Nothing downloaded the second time.
    np.testing.assert_array_equal(again["test"]["image"], expected["test"]["image"])


def test_data_dir_is_the_users_copy_and_nothing_is_downloaded(server, tiny_served, data_home):
    data = mnist.load_mnist(tiny_served, url=server.url)
    assert server.requests == [] and not data_home.exists()
    assert len(data["valid"]["label"]) == 50


def test_unknown_source_and_conflicting_settings(tiny_served):
    with pytest.raises(UserError, match=r"Unknown MNIST source 'tdfs'.*'cache'.*'tfds'"):
        mnist.load_mnist(source="tdfs")
    with pytest.raises(UserError, match="both config.data.dir .* and config.data.source='tfds'"):
        mnist.load_mnist(tiny_served, source="tfds")


# A good first file, then train-labels fails in one of these ways.
BROKEN = {
    "corrupted": "SHA-256",  # A valid gzip of other contents.
    "garbage": "not a complete gzip file",
    "truncated": "not a complete gzip file",  # A shorter file, served whole.
    "cut": "the connection closed after",
    "404": "HTTP error 404",
    "down": "connection refused",
}


@pytest.mark.parametrize("fault", list(BROKEN))
def test_broken_download_is_a_clear_quick_error_and_a_good_run_recovers(
    server, tiny_served, data_home, fault
):
    name = "train-labels-idx1-ubyte.gz"
    good = server.files["/" + name]
    if fault == "corrupted":
        labels = bytearray(gzip.decompress(good))
        labels[-1] = (labels[-1] + 1) % 10
        server.files["/" + name] = gzip.compress(bytes(labels))
    elif fault == "garbage":
        server.files["/" + name] = b"<html>Service unavailable</html>"
    elif fault == "truncated":
        server.files["/" + name] = good[: len(good) // 2]
    elif fault in ("cut", "404"):
        server.faults["/" + name] = fault
    url = server.url
    if fault == "down":
        mnist.download_mnist(url=url, progress=False)  # Everything there but ...
        (data_home / "mnist" / name).unlink()  # ... this file, and then the server is gone.
        url = closed_port_url()

    start = time.monotonic()
    with pytest.raises(UserError) as info:
        mnist.load_mnist(url=url, progress=False)
    assert time.monotonic() - start < QUICK_S
    message = str(info.value)
    cache_dir = data_home / "mnist"
    for words in (BROKEN[fault], url + name, str(cache_dir), "by hand", "--config.data.dir"):
        assert words in message, (words, message)
    # What was completed and checked stays; the broken file left nothing a later run would read.
    assert name not in trusted(cache_dir)
    assert "train-images-idx3-ubyte.gz" in trusted(cache_dir)
    assert not list(cache_dir.glob("*.part"))

    kept = trusted(cache_dir)
    server.files["/" + name] = good
    server.faults.clear()
    requests = len(server.requests)
    data = mnist.load_mnist(url=server.url, progress=False)
    assert server.requests[requests:] == ["/" + f for f in MNIST_FILES if f not in kept]
    assert trusted(cache_dir) == sorted(MNIST_FILES)
    assert len(data["train"]["label"]) == 550


def test_corrupted_cache_is_noticed_and_downloaded_again(server, tiny_served, data_home):
    cache_dir = data_home / "mnist"
    mnist.download_mnist(url=server.url, progress=False)
    (cache_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    # A plain file is read before the .gz: one of the wrong contents must go.
    (cache_dir / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + b"\0" * 8)
    requests = len(server.requests)
    data = mnist.load_mnist(url=server.url, progress=False)
    assert sorted(server.requests[requests:]) == [
        "/t10k-labels-idx1-ubyte.gz",
        "/train-labels-idx1-ubyte.gz",
    ]
    assert trusted(cache_dir) == sorted(MNIST_FILES)
    np.testing.assert_array_equal(
        data["test"]["label"], mnist.load_mnist(tiny_served)["test"]["label"]
    )


def test_default_url_falls_back_to_the_second_mirror(server, tiny_served, data_home, monkeypatch):
    monkeypatch.setattr(mnist, "DEFAULT_URL", closed_port_url())
    monkeypatch.setattr(mnist, "FALLBACK_URLS", (server.url,))
    report = mnist.download_mnist(url=None, progress=False)
    assert sorted(report.fetched) == sorted(MNIST_FILES) and report.present == []
    assert len(server.requests) == 4


def test_cli_error_is_one_paragraph_and_exit_2(data_home, tmp_path):
    url = closed_port_url()
    start = time.monotonic()
    result = run_pimnist(tmp_path / "run", f"--config.data.url={url}")
    assert time.monotonic() - start < 120  # Mostly starting Python and JAX.
    message = error_paragraph(result)
    assert f"{url}train-images-idx3-ubyte.gz: connection refused" in message
    assert str(data_home / "mnist") in message and "by hand" in message
    assert trusted(data_home / "mnist") == []


@pytest.mark.parametrize("fault", ["404", "corrupted"])
def test_download_command_for_mnist(server, tiny_served, data_home, tmp_path, fault):
    if fault == "404":
        server.faults["/train-images-idx3-ubyte.gz"] = "404"
        expected = f"{server.url}train-images-idx3-ubyte.gz: HTTP error 404"
    else:  # The subprocess pins the real digests, which the tiny files do not have.
        expected = "not the ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db pinned"
    result = run_download("mnist", str(tmp_path / "m"), "--url", server.url)
    message = error_paragraph(result)
    assert expected in message and str(tmp_path / "m") in message
    assert trusted(tmp_path / "m") == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_download_leaves_nothing_trusted(server, tiny_served, data_home, tmp_path, sig):
    server.faults["/train-images-idx3-ubyte.gz"] = "slow"
    directory = tmp_path / "mnist"
    process = subprocess.Popen(
        [sys.executable, "-m", "lnexp.data.download", "mnist", str(directory), "--url", server.url],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C must reach Python even when the tests run with SIGINT ignored (in background).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in directory.glob("*.part")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.02)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert trusted(directory) == []  # Half a file, under its .part name at most.
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert b"Traceback" not in stderr and not list(directory.glob("*.part"))

    for part in directory.glob("*.part"):  # As if the killed download were long ago.
        os.utime(part, (0, 0))
    server.faults.clear()
    report = mnist.download_mnist(directory, server.url, progress=False)
    assert sorted(report.fetched) == sorted(MNIST_FILES)
    assert trusted(directory) == sorted(MNIST_FILES) and not list(directory.glob("*.part"))
    assert len(mnist.load_mnist(directory)["test"]["label"]) == 100


# ---------------------------------------------------------------------------------------------
# The real MNIST files (from $LNEXP_DATA/mnist; skipped without them).


@pytest.fixture
def real_served(server, mnist_dir) -> Path:
    for name in MNIST_FILES:
        server.files["/" + name] = (mnist_dir / name).read_bytes()
    return mnist_dir


def test_real_files_match_the_pinned_digests(mnist_dir):
    for name in MNIST_FILES:
        data = gzip.decompress((mnist_dir / name).read_bytes())
        assert hashlib.sha256(data).hexdigest() == mnist.SHA256[name.removesuffix(".gz")]


@pytest.mark.slow
def test_pimnist_without_a_data_flag_downloads_then_finds_the_cache(
    server, real_served, data_home, tmp_path
):
    first = run_pimnist(tmp_path / "run1", f"--config.data.url={server.url}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(server.requests) == sorted("/" + f for f in MNIST_FILES)
    assert trusted(data_home / "mnist") == sorted(MNIST_FILES)
    records = [json.loads(line) for line in (tmp_path / "run1" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [2]  # 256 examples, batch 128.
    assert 0.0 <= records[0]["test_error"] <= 1.0

    second = run_pimnist(tmp_path / "run2", f"--config.data.url={server.url}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(server.requests) == 4  # Found in the cache: nothing downloaded.
    assert "downloading" not in second.stderr


def test_shared_read_only_copy_is_used_as_it_is(mnist_dir, monkeypatch):
    # CI points LNEXP_DATA at the shared data folder: its files pass, nothing is written or asked.
    monkeypatch.setenv("LNEXP_DATA", str(mnist_dir.parent))
    before = {p.name: p.stat().st_mtime_ns for p in mnist_dir.iterdir()}
    data = mnist.load_mnist(url=closed_port_url(), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in mnist_dir.iterdir()} == before
    assert len(data["train"]["label"]) == mnist.SPLIT_SIZES["train"]


# ---------------------------------------------------------------------------------------------
# SentEval: the sources' real archive layouts, with tiny contents.


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def sick_table(n: int, offset: int) -> bytes:
    rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    for i in range(n):
        a, b = story_sentence(offset + i), story_sentence(offset + i + 1)
        rows.append(f"{offset + i}\t{a}\t{b}\t{1 + (i % 9) / 2}\tNEUTRAL")
    return ("\n".join(rows) + "\n").encode()


def senteval_sources_files() -> dict[str, bytes]:
    """Every SentEval source file, by name, laid out as its distributor ships it."""

    def lines(kind: str, n: int) -> bytes:
        return "".join(f"{kind} sentence number {i} .\n" for i in range(n)).encode("latin-1")

    binary = {
        "data/": b"",
        "data/rt10662/rt-polarity.pos": lines("a fine", 7) + b"caf\xe9 scene .\n",
        "data/rt10662/rt-polarity.neg": lines("a dull", 8),
        "data/customerr/custrev.pos": lines("works great", 5),
        "data/customerr/custrev.neg": lines("broke", 6),
        "data/subj/subj.objective": lines("the plot", 5),
        "data/subj/subj.subjective": lines("i loved", 5),
        "data/subj/subjdata.README.1.0": b"Subjectivity dataset v1.0\n",
        "data/mpqa/mpqa.pos": lines("good", 4),
        "data/mpqa/mpqa.neg": lines("bad", 4),
    }
    trec_train = (
        b"DESC:manner How did serfdom develop in and then leave Russia ?\n"
        b"ENTY:cremat What films featured the character Popeye Doyle ?\n"
        b"DESC:manner How can I find a list of celebrities ' real names ?\n"
        b"HUM:ind Who wrote `` The Pit and the Pendulum ' ' ?\n"
        b"LOC:other What is the capital of C\xf4te d'Ivoire ?\n"
    )
    trec_test = b"NUM:date When was Ozzy Osbourne born ?\nHUM:ind Who killed Gandhi ?\n"
    readme = b"SICK data set, SemEval 2014 task 1.\n"
    return {
        "datasmall_NB_ACL12.zip": zip_bytes(binary),
        "train_5500.label": trec_train,
        "TREC_10.label": trec_test,
        "sick_train.zip": zip_bytes({"SICK_train.txt": sick_table(9, 0), "readme.txt": readme}),
        "sick_trial.zip": zip_bytes({"SICK_trial.txt": sick_table(3, 100), "readme.txt": readme}),
        "sick_test_annotated.zip": zip_bytes(
            {
                "SICK_test_annotated.txt": sick_table(4, 200).replace(b"\n", b"\r\n"),
                "readme.txt": readme,
            }
        ),
    }


@pytest.fixture
def senteval_server(server, data_home) -> Server:
    for name, data in senteval_sources_files().items():
        server.files["/" + name] = data
    return server


def test_senteval_sources_are_sentevals(tmp_path):
    assert senteval_sources.SOURCES["datasmall_NB_ACL12.zip"].urls[0] == (
        "https://s3.amazonaws.com/senteval/senteval_data/datasmall_NB_ACL12.zip"
    )
    assert senteval_sources.SOURCES["train_5500.label"].urls[0] == (
        "http://cogcomp.cs.illinois.edu/Data/QA/QC/train_5500.label"
    )
    assert senteval_sources.SOURCES["sick_trial.zip"].urls[0] == (
        "http://alt.qcri.org/semeval2014/task1/data/uploads/sick_trial.zip"
    )
    assert set(senteval_sources.TASK_FILES) == set(senteval_sources.TASKS)
    for task, files in senteval_sources.TASK_FILES.items():
        for _, source, _ in files:
            assert source in senteval_sources.SOURCES, (task, source)


def test_download_senteval_lays_out_data_downstream(senteval_server, tmp_path):
    out = tmp_path / "downstream"
    assert download_here("senteval", str(out), "--url", senteval_server.url) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(senteval_sources.TASKS)  # No litter.
    mr = senteval.load_binary(out / "MR")
    assert len(mr.sentences) == 16 and mr.sentences[7] == "caf\xe9 scene ."
    assert len(senteval.load_binary(out / "CR").labels) == 11
    assert len(senteval.load_binary(out / "SUBJ").labels) == 10
    assert len(senteval.load_binary(out / "MPQA").labels) == 8
    trec = senteval.load_trec(out / "TREC")
    assert trec.sentences[2] == "How can I find a list of celebrities  real names ?"  # ' removed
    assert trec.sentences[3] == "Who wrote  The Pit and the Pendulum   ?"  # `` and ' removed
    assert len(trec.test_sentences) == 2
    sick = senteval.load_sick(out / "SICK")
    assert {k: len(v[2]) for k, v in sick.splits.items()} == {"train": 9, "trial": 3, "test": 4}
    assert not (out / "SICK" / "readme.txt").exists()
    assert all("lnexp" in agent for agent in senteval_server.user_agents)

    requests = len(senteval_server.requests)
    assert download_here("senteval", str(out), "--url", senteval_server.url) == 0
    assert len(senteval_server.requests) == requests  # All there: nothing fetched again.


@pytest.mark.parametrize("fault", ["truncated", "cut", "404", "html"])
def test_download_senteval_failure_keeps_the_rest_and_recovers(
    senteval_server, tmp_path, capsys, fault
):
    out = tmp_path / "downstream"
    good = senteval_server.files["/sick_train.zip"]
    if fault == "truncated":
        senteval_server.files["/sick_train.zip"] = good[: len(good) - 40]
    elif fault == "html":
        senteval_server.files["/sick_train.zip"] = b"<html><body>Moved</body></html>"
    else:
        senteval_server.faults["/sick_train.zip"] = fault
    start = time.monotonic()
    assert download_here("senteval", str(out), "--url", senteval_server.url) == 2
    assert time.monotonic() - start < QUICK_S
    captured = capsys.readouterr()
    assert "5 SentEval tasks fetched, 0 already there, 1 failed" in captured.out
    message = captured.err[captured.err.index("error: ") :]
    for words in ("1 of 6 SentEval tasks", "SICK", senteval_server.url + "sick_train.zip", "--url"):
        assert words in message, (words, message)
    assert "by hand" in message and "SICK/SICK_train.txt" in message
    assert not (out / "SICK").exists()  # Nothing of the failed task.
    assert sorted(p.name for p in out.iterdir()) == ["CR", "MPQA", "MR", "SUBJ", "TREC"]

    senteval_server.files["/sick_train.zip"] = good
    senteval_server.faults.clear()
    requests = len(senteval_server.requests)
    assert download_here("senteval", str(out), "--url", senteval_server.url) == 0
    assert sorted(senteval_server.requests[requests:]) == [
        "/sick_test_annotated.zip",
        "/sick_train.zip",
        "/sick_trial.zip",
    ]
    assert len(senteval.load_sick(out / "SICK").splits["train"][0]) == 9


def test_download_senteval_tries_the_next_source_and_skips_dead_hosts(
    senteval_server, tmp_path, monkeypatch
):
    dead = closed_port_url()
    sources = {
        name: senteval_sources.Source(name, (dead + name, senteval_server.url + name))
        for name in senteval_sources.SOURCES
    }
    monkeypatch.setattr(senteval_sources, "SOURCES", sources)
    report = senteval_sources.download_senteval(tmp_path / "d", ["TREC", "SICK"], progress=False)
    assert report.fetched == ["TREC", "SICK"] and report.failed == []


def test_download_senteval_subset_and_unknown_task(senteval_server, tmp_path):
    report = senteval_sources.download_senteval(
        tmp_path / "d", ["TREC"], url=senteval_server.url, progress=False
    )
    assert report.fetched == ["TREC"]
    assert sorted(senteval_server.requests) == ["/TREC_10.label", "/train_5500.label"]
    with pytest.raises(UserError, match=r"Unknown SentEval task\(s\) \['STS'\]: lnexp fetches MR"):
        senteval_sources.download_senteval(tmp_path / "d", ["STS"])


def test_archives_may_be_tar_too(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        info = tarfile.TarInfo("sick/SICK_train.txt")
        data = sick_table(2, 0)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    archive = tmp_path / "sick.tar.gz"
    archive.write_bytes(buffer.getvalue())
    assert senteval_sources._extract(archive, ["SICK_train.txt"]) == {"SICK_train.txt": data}
    archive.write_bytes(buffer.getvalue()[:-30])
    with pytest.raises(ValueError, match="not a complete zip or tar archive"):
        senteval_sources._extract(archive, ["SICK_train.txt"])


# ---------------------------------------------------------------------------------------------
# Books from a Gutenberg mirror.

BOOKS = [
    gutenberg.Book(1342, "Austen, Jane", "Pride and Prejudice"),
    gutenberg.Book(2788, "Alcott, Louisa May", "Little Men: Life at Plumfield with Jo's Boys"),
    gutenberg.Book(1399, "Tolstoy, Leo, graf", "Anna Karenina"),
    gutenberg.Book(45, "Montgomery, L. M. (Lucy Maud)", "Anne of Green Gables"),
]


def gutenberg_release(book: gutenberg.Book, sentences: int = 30) -> bytes:
    """A book as Project Gutenberg serves it: BOM, CRLF, header, markers, licence."""
    body = "\n\n".join(
        " ".join(story_sentence(book.id + i) for i in range(p, p + 3))
        for p in range(0, sentences, 3)
    )
    upper = book.title.upper()
    text_ = (
        f"The Project Gutenberg eBook of {book.title}\n\n"
        "This ebook is for the use of anyone anywhere in the United States and most other\n"
        "parts of the world at no cost and with almost no restrictions whatsoever.\n\n"
        f"Title: {book.title}\n\nAuthor: {book.author}\n\n"
        f"Release date: June 1, 1998 [eBook #{book.id}]\n\nLanguage: English\n\n"
        f"*** START OF THE PROJECT GUTENBERG EBOOK {upper} ***\n\n{body}\n\n"
        f"*** END OF THE PROJECT GUTENBERG EBOOK {upper} ***\n\n"
        "Section 1. General Terms of Use and Redistributing Project Gutenberg electronic works\n"
    )
    return ("\ufeff" + text_).replace("\n", "\r\n").encode("utf-8")


@pytest.fixture
def book_list(tmp_path) -> Path:
    path = tmp_path / "books.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "author", "title"])
        writer.writerows((b.id, b.author, b.title) for b in BOOKS)
    return path


@pytest.fixture
def gutenberg_server(server, data_home) -> Server:
    for book in BOOKS:
        server.files[f"/cache/epub/{book.id}/pg{book.id}.txt"] = gutenberg_release(book)
    return server


def books_command(server: Server, out: Path, book_list: Path, *extra: str) -> list[str]:
    template = server.url + "cache/epub/{id}/pg{id}.txt"
    return ["books", str(out), "--url", template, "--list", str(book_list), "--pause", "0", *extra]


def test_shipped_book_list():
    books = gutenberg.read_book_list()
    assert len(books) == 122 and len({b.id for b in books}) == 122
    by_path = {str(b.relative_path): b.id for b in books}
    assert by_path["Austen, Jane/Pride and Prejudice.txt"] == 1342
    assert by_path["Shelley, Mary Wollstonecraft/Frankenstein; Or, The Modern Prometheus.txt"]
    assert "{id}" in gutenberg.DEFAULT_URL and "gutenberg" in gutenberg.DEFAULT_URL


def test_shipped_book_list_is_the_shared_corpus(books_dir):
    on_disk = {str(p.relative_to(books_dir)) for p in books_dir.rglob("*.txt")}
    assert {str(b.relative_path) for b in gutenberg.read_book_list()} == on_disk


def test_download_books_into_the_corpus_layout(gutenberg_server, book_list, tmp_path, capsys):
    out = tmp_path / "books"
    assert download_here(*books_command(gutenberg_server, out, book_list)) == 0
    assert "4 books fetched, 0 already there, 0 failed" in capsys.readouterr().out
    for book in BOOKS:
        path = out / book.author / f"{book.title}.txt"
        assert path.read_bytes() == gutenberg_release(book)
    assert [p.relative_to(out) for p in text.find_books(out)] == sorted(
        b.relative_path for b in BOOKS
    )
    sentences = text.book_sentences(out / "Austen, Jane" / "Pride and Prejudice.txt")
    assert len(sentences) == 30 and "licence" not in str(sentences).lower()
    assert all("lnexp" in agent for agent in gutenberg_server.user_agents)

    (out / "Austen, Jane" / "Pride and Prejudice.txt").unlink()
    requests = len(gutenberg_server.requests)
    assert download_here(*books_command(gutenberg_server, out, book_list)) == 0
    assert gutenberg_server.requests[requests:] == ["/cache/epub/1342/pg1342.txt"]  # Only that.
    assert "1 books fetched, 3 already there" in capsys.readouterr().out


def test_download_books_lists_failures_and_exits_2(gutenberg_server, book_list, tmp_path, capsys):
    gutenberg_server.faults["/cache/epub/2788/pg2788.txt"] = "404"
    gutenberg_server.files["/cache/epub/1399/pg1399.txt"] = b"<html>Too many requests</html>"
    out = tmp_path / "books"
    assert download_here(*books_command(gutenberg_server, out, book_list)) == 2
    captured = capsys.readouterr()
    assert "2 books fetched, 0 already there, 2 failed" in captured.out
    assert "HTTP error 404" in captured.out and "no '*** START OF' line" in captured.out
    message = captured.err[captured.err.index("error: ") :]
    assert "2 of 4 books could not be fetched" in message and "by hand" in message
    assert sorted(str(p.relative_to(out)) for p in text.find_books(out)) == [
        "Austen, Jane/Pride and Prejudice.txt",
        "Montgomery, L. M. (Lucy Maud)/Anne of Green Gables.txt",
    ]
    assert not list(out.rglob("*.part"))


def test_download_books_stops_when_the_mirror_is_unreachable(data_home, book_list, tmp_path):
    start = time.monotonic()
    result = run_download(
        "books", str(tmp_path / "b"), "--list", str(book_list), "--pause", "5",
        "--url", closed_port_url() + "{id}.txt",
    )  # fmt: skip
    assert time.monotonic() - start < 60  # No pause after a failure; the rest are not tried.
    message = error_paragraph(result)
    assert "4 of 4 books could not be fetched" in message and "connection refused" in message
    assert result.stdout.count("not tried: the mirror could not be reached") == 3


def test_download_books_is_polite(gutenberg_server, book_list, tmp_path):
    start = time.monotonic()
    report = gutenberg.download_books(
        tmp_path / "b",
        books=gutenberg.read_book_list(book_list),
        url=gutenberg_server.url + "cache/epub/{id}/pg{id}.txt",
        pause_s=0.3,
        progress=False,
    )
    assert len(report.fetched) == 4
    assert time.monotonic() - start >= 3 * 0.3  # A pause between each two requests.
    with pytest.raises(UserError, match=r"has no \{id\}"):
        gutenberg.download_books(tmp_path / "b", url="https://example.org/book.txt")


def test_bad_book_list(tmp_path):
    path = tmp_path / "books.csv"
    path.write_text("id,author,title\nabc,Someone,Something\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"books.csv:2: expected a Project Gutenberg eBook number"):
        gutenberg.read_book_list(path)

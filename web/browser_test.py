#!/usr/bin/env python3
"""flowrt in a real browser: headless Chromium samples the bundled models on the page that
scripts/web.sh builds (out/web/serve/), and the samples (and their trajectories) must be the
bytes the native `flowrt sample --backend cpu` writes for the same seed, method and steps.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ending in NUL on fds 3 and 4), so the page runs in real time (its timings are real,
unlike under --virtual-time-budget) and no driver or npm package is needed. The page is
served by Python's static file server (http.server) on a free localhost port.

Usage: web/browser_test.py [--chromium PATH] [--flowrt PATH] [--out out/web] [--bench R]
Exits 1 when any sample byte differs, when the negative control (a page run with another
seed) is not detected as different, or when the page reports an error.
"""

import argparse
import base64
import functools
import hashlib
import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The cases compared byte for byte: two 2-D models and the class-conditional image model
# with labels and classifier-free guidance. `negative` runs the page with seed + 1 and must
# be reported as different (the comparison can fail). `screenshot`: where the page is saved
# as a PNG a person can look at, right after the comparison (final samples, no animation).
CASES = [
    dict(name="moons_reflow", model="moons_reflow.frt", method="rk4", steps=8, num=256, seed=7,
         screenshot="screenshot_moons.png"),
    dict(name="moons_icfm", model="moons_icfm.frt", method="midpoint", steps=5, num=300, seed=3),
    dict(name="digits_unet", model="digits_unet.frt", method="rk4-38", steps=4, num=20, seed=7,
         label_cycle=10, guidance=2.0, null_label=10, screenshot="screenshot.png"),
    # As a person uses it: the page opens idle, the controls are filled in and the sample
    # button is clicked.
    dict(name="click", model="moons_icfm.frt", method="heun", steps=3, num=100, seed=5,
         click=True),
    dict(name="negative", model="moons_reflow.frt", method="euler", steps=2, num=64, seed=11,
         page_seed=12),
]

# Bad requests the page must report as errors (query string, expected text in #status).
ERROR_CASES = [
    ("model=digits_unet.frt&num=4&label=12&auto=1",
     "label 12 is out of range: the model has 11 classes"),
    ("model=moons_reflow.frt&steps=0&auto=1", "steps must be at least 1"),
    ("model=missing.frt&auto=1", "model missing.frt is not in models.json"),
]

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-pipe",
]


def read_npy_f32(path):
    """The little-endian float32 payload bytes and shape of an .npy file (stdlib only)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not an .npy file")
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", raw[8:10])
        start = 10 + hlen
    else:
        (hlen,) = struct.unpack("<I", raw[8:12])
        start = 12 + hlen
    header = raw[start - hlen:start].decode("latin1")
    if "'<f4'" not in header or "'fortran_order': False" not in header:
        raise ValueError(f"{path}: expected C-order <f4, header {header.strip()}")
    shape_txt = header.split("'shape':")[1].split(")")[0].strip(" (")
    shape = tuple(int(s) for s in shape_txt.split(",") if s.strip())
    return raw[start:], shape


def compare(what, page, native):
    """None when equal, else a one-line description of the first difference."""
    if page == native:
        return None
    if len(page) != len(native):
        return f"{what}: {len(page)} bytes in the browser, {len(native)} natively"
    i = next(k for k in range(0, len(page), 4) if page[k:k + 4] != native[k:k + 4])
    (a,) = struct.unpack("<f", page[i:i + 4])
    (b,) = struct.unpack("<f", native[i:i + 4])
    n = sum(page[k:k + 4] != native[k:k + 4] for k in range(0, len(page), 4))
    return f"{what}: {n} of {len(page) // 4} values differ; first at value {i // 4}: browser {a!r}, native {b!r}"


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, exe, width, height):
        self.profile = tempfile.mkdtemp(prefix="flowrt-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():
            # The DevTools pipe: Chromium reads fd 3 and writes fd 4.
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.setsid()

        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method, session=False, **params):
        """Sends one command and returns its result (events in between are dropped)."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe during {method}")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page."""
        r = self.call("Runtime.evaluate", session=True, expression=expression,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        os.close(self.to_child)
        os.close(self.from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


def page_state(chrome, url):
    """The page's status (`loading`, `ready`, `running`, `done`, `error`), or `none` while
    the document at `url` is not (yet) the one shown."""
    return chrome.evaluate(f"location.href === {json.dumps(url)} ? "
                           "(document.getElementById('status')?.dataset.state ?? 'none') : 'none'")


def run_page(chrome, base, case, bench, timeout_s=180):
    """Opens the page for `case`, waits for its samples and returns what it reported."""
    q = dict(model=case["model"], method=case["method"], steps=case["steps"], num=case["num"],
             seed=case.get("page_seed", case["seed"]), auto=1, anim=0, dump=1)
    if "label_cycle" in case:
        q.update(label=f"cycle:{case['label_cycle']}", guidance=case["guidance"],
                 null_label=case["null_label"])
    if bench:
        q["bench"] = bench
    if case.get("click"):
        q = dict(model=case["model"], anim=0, dump=1, bench=bench)
    url = f"{base}/?{urllib.parse.urlencode(q)}"
    chrome.call("Page.navigate", session=True, url=url)
    deadline = time.time() + timeout_s
    if case.get("click"):
        while page_state(chrome, url) \
                not in ("ready", "error"):
            if time.time() > deadline:
                raise RuntimeError(f"{url}: the page never became ready")
            time.sleep(0.1)
        fill = {"method": case["method"], "steps": case["steps"], "num": case["num"],
                "seed": case["seed"]}
        chrome.evaluate(f"""(() => {{
            for (const [id, v] of Object.entries({json.dumps(fill)})) {{
                const el = document.getElementById(id);
                el.value = String(v);
                el.dispatchEvent(new Event('change'));
            }}
            document.getElementById('run').click();
        }})()""")
    state = None
    while time.time() < deadline:
        time.sleep(0.1)
        state = page_state(chrome, url)
        if state in ("done", "error"):
            break
    report = chrome.evaluate("""JSON.stringify({
        state: document.getElementById('status').dataset.state,
        status: document.getElementById('status').textContent,
        samples: document.getElementById('samples-b64').textContent,
        trajectory: document.getElementById('trajectory-b64').textContent,
        ms: document.getElementById('elapsed').dataset.ms,
        median: document.getElementById('elapsed').dataset.median,
        min: document.getElementById('elapsed').dataset.min,
        digest: document.getElementById('digest').textContent,
        wasm: document.getElementById('wasm-bytes').textContent})""")
    report = json.loads(report)
    report["url"] = url
    if report["state"] != "done":
        raise RuntimeError(f"{url}: the page did not finish: {report['status']}")
    return report


def native(flowrt, serve, case, out, repeats):
    """Runs `flowrt sample` for `case`; returns (sample bytes, trajectory bytes, (median ms,
    min ms) of `repeats` more runs or None)."""
    npy = os.path.join(out, f"{case['name']}.npy")
    traj = os.path.join(out, f"{case['name']}_trajectory.npy")
    cmd = [flowrt, "sample", os.path.join(serve, case["model"]), "--backend", "cpu",
           "--seed", str(case["seed"]), "--num", str(case["num"]), "--method", case["method"],
           "--steps", str(case["steps"]), "-o", npy]
    if "label_cycle" in case:
        cmd += ["--label-cycle", str(case["label_cycle"]), "--guidance", str(case["guidance"]),
                "--null-label", str(case["null_label"])]
    subprocess.run(cmd + ["--trajectory", traj], check=True, stdout=subprocess.DEVNULL)
    times = []
    for _ in range(repeats):
        # The summary line: "... in 1.234 ms -> PATH" (sampling only, as the page times it).
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        times.append(float(line.split(" in ")[-1].split(" ms")[0]))
    times.sort()
    samples, _ = read_npy_f32(npy)
    trajectory, _ = read_npy_f32(traj)
    return samples, trajectory, ((times[len(times) // 2], times[0]) if times else None)


def serve(directory):
    """A static file server for `directory` on a free localhost port, in a thread."""
    handler = functools.partial(QuietHandler, directory=directory)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """http.server's handler without the per-request log lines."""

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--flowrt", default=os.path.join(ROOT, "target/release/flowrt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "out/web"))
    ap.add_argument("--bench", type=int, default=0,
                    help="also time R runs in the browser and natively (median and min)")
    args = ap.parse_args()
    if not (os.path.isfile(args.chromium) and os.access(args.chromium, os.X_OK)):
        sys.exit(f"{args.chromium}: no Chromium there (apt-get install chromium, or --chromium PATH)")
    if not os.access(args.flowrt, os.X_OK):
        sys.exit(f"{args.flowrt}: no flowrt binary (cargo build --release --bin flowrt)")
    serve_dir = os.path.join(args.out, "serve")
    if not os.path.isfile(os.path.join(serve_dir, "flowrt_web.wasm")):
        sys.exit(f"{serve_dir}/flowrt_web.wasm missing: run scripts/web.sh first")
    native_dir = os.path.join(args.out, "native")
    os.makedirs(native_dir, exist_ok=True)
    httpd, base = serve(serve_dir)
    chrome = Chromium(args.chromium, 1240, 800)
    failures = []
    try:
        for case in CASES:
            page = run_page(chrome, base, case, args.bench)
            if "screenshot" in case:
                png = base64.b64decode(chrome.call("Page.captureScreenshot", session=True,
                                                   format="png")["data"])
                path = os.path.join(args.out, case["screenshot"])
                with open(path, "wb") as f:
                    f.write(png)
                print(f"screenshot: {path} ({len(png)} bytes)")
            samples, trajectory, native_ms = native(args.flowrt, serve_dir, case, native_dir,
                                                    args.bench)
            got = base64.b64decode(page["samples"])
            got_traj = base64.b64decode(page["trajectory"])
            diffs = [d for d in (compare("samples", got, samples),
                                 compare("trajectory", got_traj, trajectory)) if d]
            sha = hashlib.sha256(got).hexdigest()
            if sha != page["digest"]:
                diffs.append(f"the page's SHA-256 {page['digest']} is not that of its bytes {sha}")
            timing = ""
            if args.bench:
                per = lambda ms: float(ms) / case["num"] * 1e3
                timing = (f"; ms median/min browser {float(page['median']):.3f} / "
                          f"{float(page['min']):.3f} ({per(page['median']):.2f} / "
                          f"{per(page['min']):.2f} us/sample), native {native_ms[0]:.3f} / "
                          f"{native_ms[1]:.3f} ({per(native_ms[0]):.2f} / "
                          f"{per(native_ms[1]):.2f} us/sample)")
            desc = (f"{case['name']}: {case['num']} x {case['method']} x {case['steps']} steps, "
                    f"{len(got)} sample bytes, {len(got_traj)} trajectory bytes{timing}")
            if case["name"] == "negative":
                if not diffs:
                    failures.append(f"negative control: seed {case['page_seed']} in the browser "
                                    f"gave the bytes of seed {case['seed']} natively")
                else:
                    print(f"ok   {desc}: a different seed is detected ({diffs[0]})")
            elif diffs:
                failures.extend(f"{case['name']}: {d}" for d in diffs)
                print(f"FAIL {desc}")
            else:
                print(f"ok   {desc}: identical, sha256 {sha[:16]}")
        for query, expected in ERROR_CASES:
            url = f"{base}/?{query}"
            chrome.call("Page.navigate", session=True, url=url)
            deadline = time.time() + 60
            while page_state(chrome, url) not in ("done", "error") and time.time() < deadline:
                time.sleep(0.1)
            status = chrome.evaluate("document.getElementById('status').textContent")
            if expected in status:
                print(f"ok   ?{query}: the page reports \"{status}\"")
            else:
                failures.append(f"?{query}: expected an error with \"{expected}\", got \"{status}\"")
        print(f"wasm module: {page['wasm']}")
    finally:
        chrome.close()
        httpd.shutdown()
    if failures:
        print("\n".join(["browser test FAILED:", *failures]), file=sys.stderr)
        sys.exit(1)
    print("browser test ok: every sample byte equals the native CLI's")


if __name__ == "__main__":
    main()

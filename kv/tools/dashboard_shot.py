# Takes docs/dashboard.png: python3 kv/tools/dashboard_shot.py http://127.0.0.1:8080/ docs/dashboard.png 75
# while weft-kv runs under weft-load (needs Debian's chromium; no network).
# Screenshot of a page after it has run for N seconds, via Chromium's
# DevTools protocol on --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-framed JSON).
import base64, json, os, subprocess, sys, time
url, out, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
r_in, w_in = os.pipe()    # we write -> chrome fd 3
r_out, w_out = os.pipe()  # chrome fd 4 -> we read
def preexec():
    os.dup2(r_in, 3); os.dup2(w_out, 4)
p = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
    "--remote-debugging-pipe", "--window-size=1400,1250", "--hide-scrollbars",
    "--user-data-dir=/tmp/weft-kv-shot-profile", "about:blank"],
    pass_fds=(3, 4), preexec_fn=preexec, stderr=subprocess.DEVNULL)
os.close(r_in); os.close(w_out)
buf = b""; nid = 0
def send(method, params=None, session=None):
    global nid
    nid += 1
    msg = {"id": nid, "method": method, "params": params or {}}
    if session: msg["sessionId"] = session
    os.write(w_in, json.dumps(msg).encode() + b"\0")
    return nid
def wait(i):
    global buf
    while True:
        while b"\0" in buf:
            raw, buf = buf.split(b"\0", 1)
            m = json.loads(raw)
            if m.get("id") == i:
                if "error" in m: raise SystemExit(m["error"])
                return m["result"]
        chunk = os.read(r_out, 1 << 20)
        if not chunk: raise SystemExit("chromium closed the pipe")
        buf += chunk
tid = wait(send("Target.createTarget", {"url": "about:blank"}))["targetId"]
sid = wait(send("Target.attachToTarget", {"targetId": tid, "flatten": True}))["sessionId"]
wait(send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1250, "deviceScaleFactor": 1, "mobile": False}, sid))
wait(send("Page.enable", {}, sid))
wait(send("Page.navigate", {"url": url}, sid))
time.sleep(secs)
data = wait(send("Page.captureScreenshot", {"format": "png"}, sid))["data"]
open(out, "wb").write(base64.b64decode(data))
send("Browser.close")
try: p.wait(10)
except Exception: p.kill()
print("wrote", out)

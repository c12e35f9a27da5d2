#!/usr/bin/env python3
"""RSS per idle proxied stream, and where it grows: the harness behind the "third pass" figures
of BENCHMARKS.md (proxy section). Standard library only.

    python3 tower-sse-proxy/benches/idle_memory.py 2000 18080 18081 -- \
        target/release/tower-sse-proxy --listen 127.0.0.1:18080 --upstream http://127.0.0.1:18081 --drain 0s

An asyncio event-stream upstream on PORT_UP (one event, then open), the command (the proxy on
PORT_PROXY; a wrapper such as `heaptrack` or an `LD_PRELOAD` allocator works too), 64 warm-up
streams, then N streams opened 100 at a time, each read up to its first event: the RSS of the
proxy process before and after, divided by N. SMAPS=1 prints the mappings that grew (from
/proc/PID/smaps). The proxy gets SIGTERM at the end; only processes this script started are
signalled.
"""
import asyncio, os, sys, signal, time, subprocess

N = int(sys.argv[1]); PP = int(sys.argv[2]); UP = int(sys.argv[3])
cmd = sys.argv[sys.argv.index('--') + 1:]

async def handle(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line or line == b'\r\n':
                break
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        ev = b"data: hi\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        await writer.drain()
        await reader.read()  # until the proxy closes
    except Exception:
        pass
    finally:
        writer.close()

def read_smaps(pid):
    maps = {}
    cur = None
    for line in open(f'/proc/{pid}/smaps'):
        first = line.split()[0]
        if '-' in first and ':' not in first:
            parts = line.split()
            cur = (parts[0], parts[5] if len(parts) > 5 else '[anon]')
            maps[cur] = {}
        else:
            key, value = line.split(':', 1)
            if value.strip().endswith('kB'):
                maps[cur][key] = int(value.split()[0])
    return maps

def rss_tree(pid):
    pids = [pid]
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                st = open(f'/proc/{d}/stat').read()
                ppid = int(st.rsplit(')', 1)[1].split()[1])
                if ppid == pid: pids.append(int(d))
            except Exception: pass
    total = 0
    for p in pids:
        try:
            for l in open(f'/proc/{p}/status'):
                if l.startswith('VmRSS:'): total += int(l.split()[1])
        except Exception: pass
    return total * 1024

def find_pid(name, root):
    # `root` or its descendant whose comm is `name` (a wrapper such as heaptrack)
    todo = [root]
    while todo:
        p = todo.pop()
        try:
            if open(f'/proc/{p}/comm').read().strip() == name:
                return p
        except Exception: pass
        for d in os.listdir('/proc'):
            if d.isdigit():
                try:
                    st = open(f'/proc/{d}/stat').read()
                    if int(st.rsplit(')', 1)[1].split()[1]) == p: todo.append(int(d))
                except Exception: pass
    raise SystemExit(f"no {name} under {root}")

async def open_stream():
    r, w = await asyncio.open_connection('127.0.0.1', PP)
    w.write(b"GET /idle HTTP/1.1\r\nHost: b\r\nAccept: text/event-stream\r\n\r\n")
    await w.drain()
    seen = b''
    while b'data: hi' not in seen:
        chunk = await asyncio.wait_for(r.read(4096), 10)
        if not chunk: raise RuntimeError('closed: %r' % seen)
        seen += chunk
    return (r, w)

async def main():
    server = await asyncio.start_server(handle, '127.0.0.1', UP, backlog=4096)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG='warn'))
    for _ in range(500):
        try:
            r, w = await asyncio.open_connection('127.0.0.1', PP); w.close(); break
        except OSError:
            await asyncio.sleep(0.02)
    time.sleep(0.2)
    pid = find_pid(os.environ.get('PROXY_COMM', 'tower-sse-proxy'), proc.pid)
    warm = [await open_stream() for _ in range(64)]
    await asyncio.sleep(0.3)
    before = rss_tree(pid)
    if os.environ.get('SMAPS'):
        m0 = read_smaps(pid)
    streams = []
    for i in range(0, N, 100):
        streams += await asyncio.gather(*[open_stream() for _ in range(min(100, N - i))])
    await asyncio.sleep(0.5)
    after = rss_tree(pid)
    print(f"pid {pid}: {N} streams, RSS {before/1024:.0f} -> {after/1024:.0f} KiB, {(after-before)/N/1024:.2f} KiB per stream", flush=True)
    if os.environ.get('SMAPS'):
        m1 = read_smaps(pid)
        rows = []
        for k, v in m1.items():
            r0 = m0.get(k, {}).get('Rss', 0)
            rows.append((v.get('Rss', 0) - r0, k, v.get('Rss', 0), v.get('Size', 0), v.get('Private_Dirty',0)))
        rows.sort(reverse=True)
        for d, k, rss, size, pd in rows[:12]:
            print(f"{d:8d} KiB more  rss {rss:8d} size {size:8d} dirty {pd:8d}  {k}")
    if os.environ.get('HOLD'):
        await asyncio.sleep(float(os.environ['HOLD']))
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        if proc.poll() is not None: break
        await asyncio.sleep(0.05)
    for r, w in streams + warm: w.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print("the proxy did not exit; killing it", flush=True)
        proc.kill()
        os.kill(pid, signal.SIGKILL)

asyncio.run(main())

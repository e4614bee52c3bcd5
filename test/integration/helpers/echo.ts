/** Python programs for long-lived TCP connections in test namespaces (run with python3 -c SCRIPT ARGS). */

/** A TCP echo server (a thread per connection); prints "listening", then "accepted IP" per connection. */
export const TCP_ECHO_SERVER = `
import socket, sys, threading
def serve(c):
    try:
        while True:
            data = c.recv(4096)
            if not data:
                break
            c.sendall(data)
    except OSError:
        pass
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
print("listening", flush=True)
while True:
    c, peer = srv.accept()
    print("accepted " + peer[0], flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/**
 * A long-lived TCP client: connects, prints "connected", sends a numbered
 * line every 100 ms and prints "echo N" for each that comes back. On SIGTERM
 * it closes with a RST (SO_LINGER 0), so the connection ends at once.
 */
export const TCP_ECHO_CLIENT = `
import select, signal, socket, struct, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
def bye(*_):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("reset", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
s.setblocking(False)
print("connected", flush=True)
seq, buf, next_send = 0, b"", 0.0
try:
    while True:
        now = time.monotonic()
        if now >= next_send:
            try:
                s.send(b"%d\\n" % seq)
                seq += 1
            except BlockingIOError:
                pass
            next_send = now + 0.1
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            data = s.recv(4096)
            if not data:
                print("eof", flush=True)
                break
            buf += data
            while b"\\n" in buf:
                line, buf = buf.split(b"\\n", 1)
                print("echo " + line.decode(), flush=True)
except OSError as e:
    print("error " + str(e), flush=True)
`;

/** Python programs for load-balancer tests in test namespaces (run with python3 -c SCRIPT ARGS). */

/** An HTTP server that answers every GET with its own name (argv: PORT NAME); prints "listening". */
export const NAMED_HTTP_SERVER = `
import http.server, sys
name = sys.argv[2].encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler)
print("listening", flush=True)
srv.serve_forever()
`;

/**
 * N GETs (argv: HOST PORT N [FIRST_SOURCE_PORT]), each on a new connection; prints
 * {"counts": {name: n}, "failures": [why]}. With FIRST_SOURCE_PORT, connection i leaves from
 * that port + i instead of an ephemeral one, so a balancer's choices are the same every run.
 */
export const HTTP_CLIENT = `
import collections, http.client, json, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else None
counts, failures = collections.Counter(), []
for i in range(n):
    try:
        source = None if first is None else ("", first + i)
        c = http.client.HTTPConnection(host, port, timeout=3, source_address=source)
        c.request("GET", "/")
        counts[c.getresponse().read().decode()] += 1
        c.close()
    except Exception as e:
        failures.append(repr(e))
print(json.dumps({"counts": counts, "failures": failures}))
`;

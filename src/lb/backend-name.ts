/**
 * How a load balancer's backend is written, ENDPOINT[:PORT] (an endpoint's
 * name or id, or a remote endpoint's address, with the port, by default the
 * VIP's), read the same way by the daemon's balancers, the controller and
 * its agents.
 */

/** The backend's endpoint part and its port (the VIP's when none is written); null when the text is not ENDPOINT[:PORT] with a port from 1 to 65535. */
export function parseBackendName(text: string, vipPort: number): { who: string; port: number; portGiven: boolean } | null {
  const m = /^(.+?)(?::(\d{1,5}))?$/.exec(text.trim());
  if (!m) return null;
  const port = m[2] === undefined ? vipPort : Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { who: m[1], port, portGiven: m[2] !== undefined };
}

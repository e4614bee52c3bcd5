/**
 * The etcd client of the controller and of the agents (the npm etcd3
 * client), with client TLS when asked, and the schema check both make before
 * they read anything.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';
import { SCHEMA_KEY, SCHEMA_VERSION } from './layout.js';

export interface EtcdOptions {
  /** Client URLs, e.g. http://127.0.0.1:2379 (https:// with the TLS files). */
  urls: string[];
  /** PEM files of client TLS: the CA that signed the members' certificates, and this client's certificate and key. */
  ca?: string;
  cert?: string;
  key?: string;
}

/** "http://a:2379,http://b:2379"; the sentence saying what is wrong otherwise. */
export function parseEtcdUrls(text: string): string[] | string {
  const urls = text.split(',').map((u) => u.trim()).filter((u) => u.length > 0);
  const bad = urls.find((u) => !/^https?:\/\/[^/\s]+$/.test(u));
  if (urls.length === 0 || bad !== undefined) return `--etcd ${text} is not a list of etcd client URLs: write e.g. http://127.0.0.1:2379 or https://10.0.0.1:2379,https://10.0.0.2:2379.`;
  return urls;
}

export function connectEtcd(o: EtcdOptions): Etcd3 {
  const options: IOptions = { hosts: o.urls, dialTimeout: 2000 };
  if (o.ca !== undefined || o.cert !== undefined || o.key !== undefined) {
    if (o.ca === undefined || o.cert === undefined || o.key === undefined) throw new Error('etcd client TLS needs all three of --etcd-ca, --etcd-cert and --etcd-key.');
    options.credentials = { rootCertificate: readFileSync(o.ca), certChain: readFileSync(o.cert), privateKey: readFileSync(o.key) };
  }
  if (o.urls.some((u) => u.startsWith('https://'))) quietIpServerNames();
  return new Etcd3(options);
}

/**
 * The state's schema version: written if etcd has none yet (by whoever comes
 * first), and refused with one sentence if it is one this vsw does not know.
 */
export async function checkSchema(client: Etcd3): Promise<void> {
  await client.if(SCHEMA_KEY, 'Create', '==', 0).then(client.put(SCHEMA_KEY).value(SCHEMA_VERSION)).commit();
  const found = await client.get(SCHEMA_KEY).string();
  if (found !== SCHEMA_VERSION) {
    throw new Error(`etcd holds vsw state of schema version ${JSON.stringify(found)}, which this vsw does not know (it knows ${SCHEMA_VERSION}): run the vsw that wrote it, or point --etcd at another cluster.`);
  }
}

let quieted = false;

/**
 * grpc-js (under the etcd client) gives TLS the member's address as the
 * server name when etcd is reached by address, and Node warns on every such
 * connection (DEP0123) on stderr, where a CLI's one sentence should be alone.
 * That one warning is dropped; the certificate is still checked against the
 * address (its IP subjectAltName).
 */
function quietIpServerNames(): void {
  if (quieted) return;
  quieted = true;
  const emit = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    (emit as (w: string | Error, ...r: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
}

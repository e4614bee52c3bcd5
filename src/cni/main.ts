#!/usr/bin/env node
/**
 * The vsw-cni executable: `vsw cni install` writes a launcher named vsw-cni
 * into the runtime's CNI bin dir that runs this file. It reads the CNI_*
 * variables and the config on stdin, prints a result or an error object on
 * stdout, and exits 0 or 1 (CNI spec, "Protocol").
 */
import { CNI_ERR, CniError, Plugin, parseConfig, readEnv, versionInfo } from './plugin.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function main(): Promise<number> {
  let cniVersion = '1.0.0';
  try {
    const env = readEnv(process.env);
    const text = await readStdin();
    if (env.command === 'VERSION') {
      // VERSION's config carries only cniVersion; an empty one is answered too.
      let asked: string | undefined;
      try {
        asked = text.trim() === '' ? undefined : (JSON.parse(text) as { cniVersion?: string }).cniVersion;
      } catch (err) {
        throw new CniError(CNI_ERR.decodeFailure, `the configuration on stdin is not JSON (${(err as Error).message}): the runtime must send {"cniVersion": ...}.`);
      }
      print(versionInfo(asked ?? cniVersion));
      return 0;
    }
    const config = parseConfig(text);
    cniVersion = config.cniVersion;
    if (env.command === 'GC' || env.command === 'STATUS') {
      throw new CniError(CNI_ERR.incompatibleVersion, `${env.command} belongs to CNI 1.1, which vsw-cni does not speak: configure cniVersion 1.0.0 or earlier.`);
    }
    const plugin = Plugin.forConfig(config);
    if (env.command === 'ADD') print(await plugin.add(env, config));
    else if (env.command === 'DEL') await plugin.del(env);
    else await plugin.check(env, config);
    return 0;
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(CNI_ERR.ioFailure, `vsw-cni failed: ${(err as Error).message}`);
    print({ cniVersion, code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) });
    return 1;
  }
}

function print(value: object): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

process.exitCode = await main();

/**
 * `vsw overlay`: the tunnels of overlay networks. `ls` shows peers, the MAC
 * to VTEP table (learned and static), ARP suppression entries and counters;
 * `peer` changes who the network's other hosts are; `remote` pushes a remote
 * endpoint (its MAC and address behind a peer's VTEP) so that frames to it go
 * straight to that host and ARP for it is answered locally.
 */
import { Command } from 'commander';
import type { Network, OverlayNetworkState, RemoteEndpointRequest } from '../../service/api-types.js';
import { seg, type Client } from '../client.js';
import { CliError } from '../errors.js';
import { formatOverlay } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine } from './common.js';

async function peersOf(client: Client, network: string): Promise<string[]> {
  const net = await client.get<Network>(`/networks/${seg(network)}`);
  if (!net.overlay) throw new CliError(`network ${network} is a ${net.driver} network, not an overlay one: peers belong to overlay networks.`);
  return net.overlay.peers;
}

async function putPeers(client: Client, network: string, peers: string[]): Promise<void> {
  const r = await client.put<{ added: string[]; removed: string[] }>(`/networks/${seg(network)}/peers`, { peers });
  printLine(`peers of ${network}: ${peers.join(', ') || '(none)'}${r.added.length ? `; added ${r.added.join(', ')}` : ''}${r.removed.length ? `; removed ${r.removed.join(', ')}` : ''}`);
}

export function overlayCommand(): Command {
  const overlay = new Command('overlay').description('inspect and steer the VXLAN tunnels of overlay networks: peers, remote endpoints, counters');
  overlay
    .command('ls')
    .alias('list')
    .description("list every overlay network (or one) with its peers, counters, and the MAC -> VTEP table")
    .option('--network <name>', 'only this overlay network')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  vsw overlay ls --network blue')
    .action(async (opts: { network?: string; json?: boolean }, command: Command) => {
      const query = opts.network === undefined ? '' : `?network=${seg(opts.network)}`;
      const states = await clientOf(command).get<OverlayNetworkState[]>(`/overlay${query}`);
      if (opts.json) printJson(states);
      else printLine(formatOverlay(states));
    });

  const peer = new Command('peer').description("change an overlay network's peer VTEPs (the other hosts of the network)");
  peer
    .command('add')
    .description('add peer VTEPs')
    .argument('<network>', 'overlay network')
    .argument('<vtep...>', "the peers' underlay addresses")
    .addOption(leafSocketOption())
    .action(async (network: string, vteps: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      const peers = await peersOf(client, network);
      await putPeers(client, network, [...new Set([...peers, ...vteps])]);
    });
  peer
    .command('rm')
    .alias('remove')
    .description('remove peer VTEPs, and every MAC learned or pushed behind them')
    .argument('<network>', 'overlay network')
    .argument('<vtep...>', "the peers' underlay addresses")
    .addOption(leafSocketOption())
    .action(async (network: string, vteps: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      const peers = await peersOf(client, network);
      const missing = vteps.filter((v) => !peers.includes(v));
      if (missing.length > 0) throw new CliError(`${missing.join(', ')} ${missing.length === 1 ? 'is not a peer' : 'are not peers'} of ${network}: its peers are ${peers.join(', ') || '(none)'}.`);
      await putPeers(client, network, peers.filter((p) => !vteps.includes(p)));
    });
  overlay.addCommand(peer);

  const remote = new Command('remote').description('static remote endpoints: a MAC (and IP) behind a peer VTEP, so frames go straight there and ARP is answered locally');
  remote
    .command('add')
    .description('add or replace a remote endpoint')
    .argument('<network>', 'overlay network')
    .requiredOption('--mac <mac>', "the remote endpoint's MAC")
    .option('--ip <ip>', "its IPv4 address (for ARP suppression)")
    .requiredOption('--vtep <ip>', 'the peer VTEP it is behind')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  vsw overlay remote add blue --mac 02:76:0a:0a:00:82 --ip 10.10.0.130 --vtep 192.168.56.12')
    .action(async (network: string, opts: { mac: string; ip?: string; vtep: string }, command: Command) => {
      const body: RemoteEndpointRequest = { mac: opts.mac, vtep: opts.vtep };
      if (opts.ip !== undefined) body.ip = opts.ip;
      const added = await clientOf(command).post<RemoteEndpointRequest>(`/networks/${seg(network)}/remotes`, body);
      printLine(`${added.mac}${added.ip ? ` ${added.ip}` : ''} -> ${added.vtep}`);
    });
  remote
    .command('rm')
    .alias('remove')
    .description('remove a remote endpoint')
    .argument('<network>', 'overlay network')
    .argument('<mac>', "the remote endpoint's MAC")
    .addOption(leafSocketOption())
    .action(async (network: string, mac: string, _opts: object, command: Command) => {
      await clientOf(command).delete(`/networks/${seg(network)}/remotes/${seg(mac)}`);
    });
  overlay.addCommand(remote);
  return overlay;
}

import { Command } from 'commander';
import type { CreateNetworkRequest, Network } from '../../service/api-types.js';
import { seg } from '../client.js';
import { collectValues, formatNetworks, parseWholeNumber } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine, removeEach } from './common.js';

interface CreateOptions {
  driver: string;
  subnet: string;
  gateway?: string;
  transit?: string;
  externalIp?: string;
  natPorts?: string;
  vni?: number;
  vtep?: string;
  peer?: string[];
  vxlanPort?: number;
  mtu?: number;
  ipRange?: string;
  uplink?: string;
  vlan?: number;
  ipam?: string;
  fabric?: string;
  resolver?: string;
  hosts?: string;
}

export function networkCommand(): Command {
  const network = new Command('network').description('manage networks (a subnet and a broadcast domain on the switch)');

  network
    .command('create')
    .description('create a network and print its name')
    .argument('<name>', "network name: letters, digits, '_', '.', '-' (at most 64)")
    .option('-d, --driver <driver>', 'network mode: internal, nat, overlay, transparent, l2bridge or l2tunnel', 'internal')
    .requiredOption('--subnet <cidr>', 'IPv4 subnet of the network, e.g. 10.88.0.0/24')
    .option('--gateway <ip>', 'gateway address inside the subnet; endpoints get a default route via it (nat: default the first address, answered by vsw)')
    .option('--transit <cidr>', 'nat: subnet between the host and vsw on the host interface (default: a free /30 from 100.127.0.0/16)')
    .option('--external-ip <ip>', "nat: vsw's address in the transit subnet, the address containers' traffic leaves from (default: its second address)")
    .option('--nat-ports <first-last>', 'nat: external ports handed out to outbound flows, per protocol (default 1024-65535)')
    .option('--vni <n>', 'overlay: VXLAN network identifier, 1 to 16777215, the same on every host of the network', (v) => parseWholeNumber(v, '--vni'))
    .option('--vtep <ip>', "overlay: this host's underlay address (default: the one the host uses to reach the first peer)")
    .option('--peer <ip>', "overlay: another host's VTEP address (repeatable)", collectValues)
    .option('--vxlan-port <port>', 'overlay: UDP port of VXLAN on every host (default 4789)', (v) => parseWholeNumber(v, '--vxlan-port'))
    .option('--mtu <bytes>', "overlay: the endpoints' MTU (default: the underlay interface's MTU minus 50)", (v) => parseWholeNumber(v, '--mtu'))
    .option('--uplink <ifname>', 'transparent, l2bridge and l2tunnel: the host interface the network rides on; containers appear on its LAN with their own MACs (transparent) or all with its MAC (l2bridge, l2tunnel)')
    .option('--fabric <ifname>', 'l2bridge: make this host a fabric host; the interface faces container hosts whose l2tunnel networks send every frame here (their addresses: vsw fabric add)')
    .option('--ipam <mode>', "transparent: where endpoints' addresses come from: static (vsw hands them out from --subnet/--ip-range, the default) or dhcp (the LAN's DHCP server, asked by vsw with each endpoint's MAC)")
    .option('--vlan <id>', 'transparent, l2bridge and l2tunnel: the 802.1Q VLAN (1 to 4094) of the uplink the network is on; several networks share an uplink on different VLANs (default: untagged)', (v) => parseWholeNumber(v, '--vlan'))
    .option('--hosts <names>', 'with --controller: the hosts the network is made on, comma-separated (their agents create it)')
    .option('--resolver <ip>', "internal and overlay networks without --gateway: the address vsw answers the endpoints' DNS at (with a gateway, and on nat networks, the gateway is the resolver)")
    .option('--ip-range <cidr>', "overlay, transparent, l2bridge and l2tunnel: the addresses this host hands out, a subnet or FIRST-LAST (overlay default: this host's share by its VTEP's place among all VTEPs; otherwise the whole subnet)")
    .addOption(leafSocketOption())
    .addHelpText(
      'after',
      '\nExamples:\n  vsw network create -d internal --subnet 10.90.0.0/24 blue\n  vsw network create -d nat --subnet 172.18.0.0/24 mynat\n  vsw network create -d overlay --subnet 10.10.0.0/24 --vni 4096 --vtep 192.168.56.11 --peer 192.168.56.12 blue\n  vsw network create -d transparent --uplink eth1 --subnet 192.168.1.0/24 --gateway 192.168.1.1 lan\n  vsw network create -d l2bridge --uplink eth1 --subnet 192.168.1.0/24 --gateway 192.168.1.1 --ip-range 192.168.1.192/26 one-mac\n  vsw network create -d transparent --uplink eth1 --vlan 100 --subnet 10.100.0.0/24 --gateway 10.100.0.1 lab100\n  vsw network create -d transparent --uplink eth1 --ipam dhcp --subnet 192.168.1.0/24 office\n  vsw network create -d l2tunnel --uplink eth1 --subnet 192.168.1.0/24 --ip-range 192.168.1.128/27 tun   (a container host)\n  vsw network create -d l2bridge --uplink eth1 --fabric eth2 --subnet 192.168.1.0/24 fab              (its fabric host)\n\nAn overlay network stretches one subnet across hosts with VXLAN: create it on every host\nwith the same --subnet and --vni, each with its own --vtep and the others as --peer.\n\nA nat network adds one interface to the host (named like the network) and, while it exists,\nturns on net.ipv4.ip_forward and masquerades its external address out of the default route;\n`vsw network inspect NAME` lists every host change, and `vsw network rm` undoes them.',
    )
    .action(async (name: string, opts: CreateOptions, command: Command) => {
      const body: CreateNetworkRequest = { name, driver: opts.driver as CreateNetworkRequest['driver'], subnet: opts.subnet };
      if (opts.gateway !== undefined) body.gateway = opts.gateway;
      if (opts.transit !== undefined) body.transit = opts.transit;
      if (opts.externalIp !== undefined) body.externalIp = opts.externalIp;
      if (opts.natPorts !== undefined) body.natPorts = opts.natPorts;
      if (opts.vni !== undefined) body.vni = opts.vni;
      if (opts.vtep !== undefined) body.vtep = opts.vtep;
      if (opts.peer !== undefined) body.peers = opts.peer;
      if (opts.vxlanPort !== undefined) body.vxlanPort = opts.vxlanPort;
      if (opts.mtu !== undefined) body.mtu = opts.mtu;
      if (opts.ipRange !== undefined) body.ipRange = opts.ipRange;
      if (opts.uplink !== undefined) body.uplink = opts.uplink;
      if (opts.vlan !== undefined) body.vlan = opts.vlan;
      if (opts.ipam !== undefined) body.ipam = opts.ipam as CreateNetworkRequest['ipam'];
      if (opts.fabric !== undefined) body.fabric = opts.fabric;
      if (opts.resolver !== undefined) body.resolver = opts.resolver;
      if (opts.hosts !== undefined) (body as CreateNetworkRequest & { hosts?: string[] }).hosts = opts.hosts.split(',').map((h) => h.trim());
      const created = await clientOf(command).post<Network>('/networks', body);
      printLine(created.name);
    });

  network
    .command('ls')
    .alias('list')
    .description('list networks')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .action(async (opts: { json?: boolean }, command: Command) => {
      const networks = await clientOf(command).get<Network[]>('/networks');
      if (opts.json) printJson(networks);
      else printLine(formatNetworks(networks));
    });

  network
    .command('inspect')
    .description('print a network as JSON, with the ids of its endpoints')
    .argument('<name>', 'network name')
    .addOption(leafSocketOption())
    .action(async (name: string, _opts: object, command: Command) => {
      printJson(await clientOf(command).get<Network>(`/networks/${seg(name)}`));
    });

  network
    .command('rm')
    .alias('remove')
    .description('remove networks (they must have no endpoints left)')
    .argument('<name...>', 'network names')
    .addOption(leafSocketOption())
    .action(async (names: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      await removeEach(names, (name) => client.delete(`/networks/${seg(name)}`));
    });

  return network;
}

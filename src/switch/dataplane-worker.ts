/**
 * The data-plane thread. It owns the receive engine (so readiness callbacks
 * run on this thread's event loop, never behind an API call) and the Switch,
 * and takes declarative commands from the control plane by message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RX_BATCH, RX_HEADROOM, RX_SLOT_SIZE, RxEngine, VNET_HDR_LEN, writeBatch } from '../native/index.js';
import { MacTable } from './mac-table.js';
import type { DataPlaneCommand, DataPlaneLog, DataPlaneReply, DataPlaneRequest, DataPlaneWorkerData, SwitchCounters } from './messages.js';
import { Switch, type FrameIo } from './switch.js';

const MAC_SWEEP_INTERVAL_MS = 1000;

const data = workerData as DataPlaneWorkerData;
const port = parentPort!;

function log(entry: DataPlaneLog): void {
  port.postMessage(entry);
}

let sw: Switch;
const engine = new RxEngine((portId, count) => sw.receive(portId, count));

const io: FrameIo = {
  buffer: engine.buffer,
  lengths: engine.lengths,
  slotSize: RX_SLOT_SIZE,
  headroom: RX_HEADROOM,
  vnetHdrLen: VNET_HDR_LEN,
  batchSize: RX_BATCH,
  transmit: writeBatch,
};

sw = new Switch(io, new Float64Array(data.counters), new MacTable(data.macTable), {
  portStopped(portId, errno) {
    engine.removePort(portId);
    log({ log: 'error', msg: 'port stopped receiving after a read error; remove and recreate the endpoint', fields: { portId, errno } });
  },
});

const sweepTimer = setInterval(() => sw.macTable.sweep(performance.now()), MAC_SWEEP_INTERVAL_MS);

function execute(command: DataPlaneCommand): unknown {
  switch (command.op) {
    case 'addNetwork':
      sw.addNetwork(command.networkId, command.name);
      return undefined;
    case 'removeNetwork':
      sw.removeNetwork(command.networkId);
      return undefined;
    case 'addPort':
      sw.addPort(command);
      try {
        engine.addPort(command.portId, command.fd);
      } catch (err) {
        sw.removePort(command.portId);
        throw err;
      }
      return undefined;
    case 'removePort':
      // Stop polling first: once this returns, the fd is out of epoll and the caller may close it.
      engine.removePort(command.portId);
      sw.removePort(command.portId);
      return undefined;
    case 'switchCounters': {
      const result: SwitchCounters = { macTable: sw.macTable.counters(), batches: sw.batches, ports: sw.portCount };
      return result;
    }
    case 'macEntries':
      return sw.macTable.entries(performance.now());
    case 'stop':
      clearInterval(sweepTimer);
      engine.close();
      port.close();
      return undefined;
  }
}

port.on('message', (request: DataPlaneRequest) => {
  let reply: DataPlaneReply;
  try {
    reply = { id: request.id, ok: true, result: execute(request.command) };
  } catch (err) {
    reply = { id: request.id, ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  if (request.command.op === 'stop') return; // the port is closed; the worker exits on its own
  port.postMessage(reply);
});

port.postMessage({ ready: true });

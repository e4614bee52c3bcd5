/** Every scenario of `npm run bench`, in the order of TEST_NAMES (the order they run in); a new one is a file and a line here. */
import type { Scenario } from './scenario.js';
import { natScenario } from './scenario-nat.js';
import { overlayScenario } from './scenario-overlay.js';
import { policyScenario } from './scenario-policy.js';
import { qosScenario } from './scenario-qos.js';
import { tcpScenario } from './scenario-tcp.js';
import { l2bridgeScenario, transparentScenario } from './scenario-uplink.js';
import { udpScenario } from './scenario-udp.js';
import { vmScenario } from './scenario-vm.js';

export const SCENARIOS: readonly Scenario[] = [tcpScenario, udpScenario, policyScenario, qosScenario, natScenario, overlayScenario, transparentScenario, l2bridgeScenario, vmScenario];

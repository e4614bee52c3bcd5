/**
 * A broadcast domain of the switch: its member ports (switched to by MAC and
 * flooded to) and the stages its frames pass on the slow path, built once
 * when the network is configured. What a network is (internal, nat, overlay)
 * is which stages and port kinds it has, not a flag the forwarding loop tests.
 */
import type { SwitchPort } from './ports/port.js';
import type { NetworkStage } from './stages/stage.js';

export class SwitchNetwork {
  /** The ports frames are switched and flooded between (a nat network's host TAP is not one; an overlay's tunnel port is). */
  readonly ports: SwitchPort[] = [];
  constructor(
    readonly id: number,
    readonly name: string,
    /** In the order a frame meets them, after the ingress port's outbound layers and before MAC forwarding. */
    readonly stages: readonly NetworkStage[],
  ) {}

  addMember(port: SwitchPort): void {
    this.ports.push(port);
  }

  removeMember(port: SwitchPort): void {
    const i = this.ports.indexOf(port);
    if (i >= 0) this.ports.splice(i, 1);
  }
}

/**
 * Injected transport faults (transfer/faults.ts): a `FaultInjector` decides
 * deterministically which datagrams are lost, each injector on its own
 * sequence (no process-wide state), and a control socket drops datagrams only
 * when it was given one.
 */

import assert from "node:assert/strict";
import { FaultInjector } from "../transfer/faults.ts";
import { ControlSocket } from "../transfer/control_socket.ts";
import type { ControlMessage } from "../transfer/control_messages.ts";

function drops(injector: FaultInjector, n: number): boolean[] {
  return Array.from({ length: n }, () => injector.dropDatagram());
}

Deno.test("an injector without a drop rate loses no datagram; a rate of 1 loses every one", () => {
  assert.ok(drops(new FaultInjector(), 1000).every((d) => !d));
  assert.ok(drops(new FaultInjector({ serveCorrupt: true }), 1000).every((d) => !d));
  assert.ok(drops(new FaultInjector({ udpDropRate: 1 }), 1000).every((d) => d));
});

Deno.test("the same seed loses the same datagrams in every run; another seed loses others", () => {
  const a = drops(new FaultInjector({ udpDropRate: 0.3 }, 1001), 1000);
  const b = drops(new FaultInjector({ udpDropRate: 0.3 }, 1001), 1000);
  const c = drops(new FaultInjector({ udpDropRate: 0.3 }, 1002), 1000);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const lost = a.filter((d) => d).length;
  assert.ok(lost > 200 && lost < 400, `about 30% lost, got ${lost} of 1000`);
});

Deno.test("injectors do not share their sequence: using one does not change another's", () => {
  const alone = drops(new FaultInjector({ udpDropRate: 0.5 }, 7), 100);
  const first = new FaultInjector({ udpDropRate: 0.5 }, 7);
  const other = new FaultInjector({ udpDropRate: 0.5 }, 7);
  const interleaved: boolean[] = [];
  for (let i = 0; i < 100; i++) {
    interleaved.push(first.dropDatagram());
    other.dropDatagram();
  }
  assert.deepEqual(interleaved, alone);
});

Deno.test("the injector keeps its own copy of the faults it was given", () => {
  const faults = { udpDropRate: 0 };
  const injector = new FaultInjector(faults);
  faults.udpDropRate = 1;
  assert.equal(injector.transport.udpDropRate, 0);
  assert.equal(injector.dropDatagram(), false);
});

const PING: ControlMessage = { type: "closedAck", manifestId: "r1.b1.e1", nodeId: "n1" };

Deno.test("a control socket given a drop rate of 1 sends nothing and counts the drops; one without faults delivers", async () => {
  const receiver = ControlSocket.open("127.0.0.1", 0);
  const lossy = ControlSocket.open("127.0.0.1", 0, {
    faults: new FaultInjector({ udpDropRate: 1 }),
  });
  const clean = ControlSocket.open("127.0.0.1", 0);
  try {
    const to = { hostname: "127.0.0.1", port: receiver.port };
    await lossy.send(PING, to);
    await lossy.send(PING, to);
    assert.equal(lossy.counters.faultDropped, 2);
    assert.equal(lossy.counters.sent, 0);
    await clean.send(PING, to);
    assert.equal(clean.counters.faultDropped, 0);
    const { value } = await receiver.messages().next();
    assert.deepEqual(value?.message, PING);
    assert.equal(value?.from.port, clean.port, "the first datagram to arrive is the clean one");
  } finally {
    receiver.close();
    lossy.close();
    clean.close();
  }
});

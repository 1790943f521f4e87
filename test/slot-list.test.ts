// The proxy's SlotList (src/ns-proxy/slot-list.ts): O(1) add and delete by the index an item carries, and a walk
// that survives deleting the item it is on. Why it replaced Sets: the GC test in test/ns-proxy.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotList } from '../src/ns-proxy/slot-list.js';

const item = (name: string) => ({ name, slot: -1 });

describe('SlotList', () => {
  test('add and delete keep every item at the slot it says, the last one filling the hole', () => {
    const l = new SlotList<ReturnType<typeof item>>();
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(item) as [ReturnType<typeof item>, ReturnType<typeof item>, ReturnType<typeof item>, ReturnType<typeof item>];
    for (const x of [a, b, c, d]) l.add(x);
    assert.equal(l.size, 4);
    assert.deepEqual([a.slot, b.slot, c.slot, d.slot], [0, 1, 2, 3]);
    assert.equal(l.delete(b), true);
    assert.equal(b.slot, -1);
    assert.equal(d.slot, 1, 'the last item moved into the freed slot');
    assert.equal(l.delete(b), false, 'deleting twice is a no-op');
    assert.equal(l.delete(d), true);
    assert.equal(l.delete(c), true, 'the last one: nothing moves');
    assert.deepEqual([...l].map((x) => x.name), ['a']);
    assert.equal(l.delete(a), true);
    assert.equal(l.size, 0);
    assert.deepEqual([...l], []);
  });

  test('an item of another list, or none, is not deleted', () => {
    const l1 = new SlotList<ReturnType<typeof item>>();
    const l2 = new SlotList<ReturnType<typeof item>>();
    const a = item('a');
    const b = item('b');
    l1.add(a);
    l2.add(b);
    assert.equal(l1.delete(b), false, 'same slot number, other list');
    assert.equal(l1.delete(item('x')), false);
    assert.equal(l1.size, 1);
    assert.equal(l2.size, 1);
  });

  test('deleting the item being visited skips nothing and visits nothing twice', () => {
    const l = new SlotList<ReturnType<typeof item>>();
    const all = Array.from({ length: 50 }, (_, i) => item(`i${i}`));
    for (const x of all) l.add(x);
    const seen: string[] = [];
    for (const x of l) {
      seen.push(x.name);
      if (Number(x.name.slice(1)) % 3 === 0) l.delete(x);
    }
    assert.deepEqual([...seen].sort(), all.map((x) => x.name).sort());
    assert.equal(l.size, 50 - 17);
    for (const x of l) assert.notEqual(Number(x.name.slice(1)) % 3, 0);
  });
});

#!/usr/bin/env python3
"""Tests of scripts/capacity.py (unittest, standard library only).

    python3 scripts/test_capacity.py          # or: python3 -m unittest discover -s scripts -p 'test_capacity.py'

The expected figures are worked out by hand from the committed inputs
(docs/capacity-inputs.json), in the comments next to them; if an input
changes on purpose, change the figure here too.
"""

import math
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE))

import capacity as cap  # noqa: E402

DOC = HERE.parent / "docs" / "capacity.md"


class HandComputed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.inp = cap.load_inputs()
        cls.r = cap.build(cls.inp)

    def test_load(self):
        # 10M users × 100 = 1B messages a day; / 86,400 = 11,574/s; × 3 = 34,722/s at peak.
        self.assertEqual(self.r["messages"], 1e9)
        self.assertAlmostEqual(self.r["messages"] / 86_400, 11_574.07, places=2)
        # 800M 1:1 × 1 recipient + 200M group × 19 recipients = 4.6B deliveries.
        self.assertEqual(self.r["deliveries"], 4.6e9)
        # 4.6B × 0.5 offline / (10M × 10 sessions) = 23 missed messages per session.
        self.assertAlmostEqual(self.r["missed_per_session"], 23.0)

    def test_write_units_follow_item_size(self):
        # ⌈(text + 100) / 1024⌉ + 2: 150 B → 1 + 2; 1,000 B → 2 + 2 (docs/cost.md: 4); 10,240 B → 11 + 2.
        self.assertEqual(cap.send_wcu(self.inp, 150), 3)
        self.assertEqual(cap.send_wcu(self.inp, 924), 3)
        self.assertEqual(cap.send_wcu(self.inp, 925), 4)
        self.assertEqual(cap.send_wcu(self.inp, 1000), 4)
        self.assertEqual(cap.send_wcu(self.inp, 10_240), 13)

    def test_group_fanout_reads(self):
        # 100 members: cached, the version check (1) + 100 × 0.5 = 51 (docs/cost.md);
        # the list itself ⌈(200 + 100 × 100) / 4096⌉ = 3 after a change.
        self.assertEqual(cap.group_read_units(self.inp, 100) + cap.lookup_units(self.inp, 100), 51)
        self.assertEqual(cap.group_list_units(self.inp, 100), 3)
        # 20 members: not cached (no cheaper), ⌈2,200 / 4096⌉ = 1, + 10 = 11.
        self.assertEqual(cap.group_read_units(self.inp, 20) + cap.lookup_units(self.inp, 20), 11)
        # A group ack reads the 20 member items: ⌈2,000 / 4096⌉ = 1.
        self.assertEqual(cap.member_items_units(self.inp, 20), 1)

    def test_a_conn_tier_broadcast_replaces_the_look_ups_of_large_groups_only(self):
        # 100 members: 50 look-ups replaced by one registry listing (0.5).
        self.assertEqual(cap.broadcast_saving_units(self.inp, 100), 49.5)
        # 20 members (under 32): looked up as before.
        self.assertEqual(cap.broadcast_saving_units(self.inp, 20), 0.0)

    def test_with_no_acks_there_are_no_receipts_and_fewer_api_gateway_messages(self):
        none = cap.build(cap.with_overrides(self.inp, {"client.acks_per_delivered_message": 0.0}))
        self.assertEqual(cap.receipts_out_day(none), 0.0)
        # 2.3B acks in and 1.625B receipts out fewer (0.4B 1:1 acks × 0.5
        # online + 1.9B group acks × 0.75).
        self.assertAlmostEqual(self.r["apigw_msgs_day"] - none["apigw_msgs_day"],
                               2.3e9 + 0.4e9 * 0.5 + 1.9e9 * 0.75, delta=1)
        self.assertAlmostEqual(cap.receipts_out_day(self.r), 0.4e9 * 0.5 + 1.9e9 * 0.75, delta=1)

    def test_every_cost_md_row_is_reproduced(self):
        for row, qty, measured, model in cap.calibration(self.inp):
            with self.subTest(row=row, quantity=qty):
                self.assertAlmostEqual(measured, model)

    def test_tiered_prices(self):
        # 2B API Gateway messages: 1B × $1.00/M + 1B × $0.80/M = $1,800.
        self.assertAlmostEqual(cap.price(self.inp, "apigw_ws_message", 2e9), 1800.0)
        self.assertAlmostEqual(cap.price(self.inp, "apigw_ws_message", 5e8), 500.0)

    def test_connection_minutes(self):
        # 10M × 120 min × 730 / 24 days × $0.25 / 1M = $9,125 a month.
        c = cap.costs(self.inp, 1)
        self.assertAlmostEqual(c["a_items"]["API Gateway connection minutes"], 9125.0, places=6)

    def test_api_gateway_messages(self):
        # in: 1B sends + 2.3B acks + 100M syncs + 200M received (2 a session)
        #     + 20M history + 10M × 120 / 9 pings + 100K creates.
        pings = 10e6 * 120 / 9
        self.assertAlmostEqual(self.r["frames_in_day"], 1e9 + 2.3e9 + 1e8 + 2e8 + 2e7 + pings + 1e5, delta=1)
        # out: 800M × (ack + 0.5 delivery) + 200M × (1 + 19 × 0.5) + 400M × 0.5
        #      + 1.9B group acks × 0.5 online × 1.5 authors (the reader's other
        #      devices: none, one connection a user)
        #      + 100M × (23 + 1) + 20M + pings + 100K × (1 + 19 × 0.5)
        out = 8e8 * 1.5 + 2e8 * 10.5 + 4e8 * 0.5 + 1.9e9 * 0.5 * 1.5 + 1e8 * 24 + 2e7 + pings + 1e5 * 10.5
        self.assertAlmostEqual(self.r["apigw_msgs_day"] - self.r["frames_in_day"], out, delta=1)

    def test_storage_per_day(self):
        # 1B × (150 + 100 + 100) B = 350 GB = 325.96 GiB a day.
        self.assertAlmostEqual(self.r["storage_msgs_gib_day"], 350e9 / 2**30)
        # Idempotency records: 1B × 230 B × 7 days held.
        self.assertAlmostEqual(self.r["storage_idem_gib"], 1e9 * 230 * 7 / 2**30)
        # Worst case: 1B × (10,240 + 200) B a day.
        self.assertAlmostEqual(self.r["storage_msgs_gib_day_worst"], 1e9 * 10_440 / 2**30)

    def test_selfhosted_per_frame_and_connections(self):
        b = cap.selfhosted(self.inp, self.r)
        # 1.00 core / 20,597 msg/s / 3 frames = 16.18 µs per frame.
        self.assertAlmostEqual(b["frame_us"], 0.94e6 / 35_585 / 3)
        # 16 GiB × 0.75 × 0.6 / (14.5 × 1024 + 4096) B per connection.
        self.assertAlmostEqual(b["conns_per_node"], 16 * 2**30 * 0.75 * 0.6 / (7.3 * 1024 + 4096))
        # 2.5M connections at peak: 10M × 120 / 1,440 × 3.
        self.assertAlmostEqual(b["peak_conns"], 2.5e6)
        self.assertGreaterEqual(b["nodes"], 3)

    def test_ten_times_costs_about_ten_times(self):
        c1, c10 = cap.costs(self.inp, 1), cap.costs(self.inp, 10)
        # Volume tiers make 10× a little cheaper than 10 × 1×, never dearer.
        self.assertTrue(9.0 < c10["a"] / c1["a"] <= 10.0)
        self.assertTrue(9.0 < c10["b_total"] / c1["b_total"] <= 10.0)

    def test_crossover_is_where_costs_meet(self):
        x = cap.crossover(self.inp)
        self.assertIsNotNone(x)
        c = cap.costs(self.inp, x)
        self.assertLess(abs(c["a"] - c["b_total"]) / c["a"], 1e-6)
        self.assertLess(cap.costs(self.inp, 1)["b_total"], cap.costs(self.inp, 1)["a"])
        self.assertGreater(cap.costs(self.inp, x / 2)["b_total"], cap.costs(self.inp, x / 2)["a"])


class Inputs(unittest.TestCase):
    def test_every_input_says_where_it_comes_from(self):
        inp = cap.load_inputs()
        for section, items in inp.items():
            if section.startswith("_"):
                continue
            for name, leaf in items.items():
                if name.startswith("_"):
                    continue
                with self.subTest(input=f"{section}.{name}"):
                    if name == "cost_rows":
                        for key, row in leaf.items():
                            self.assertTrue(key.startswith("_") or row.get("source"), key)
                    elif name == "lambda_init_ms":
                        self.assertIn("docs/functions.md", leaf["_source"])
                    else:
                        self.assertTrue(leaf.get("source") or leaf.get("why"), "no source or why")

    def test_every_price_has_a_source_and_date(self):
        for name, p in cap.load_inputs()["prices"].items():
            if name.startswith("_") or "why" in p:
                continue
            with self.subTest(price=name):
                self.assertTrue(p["source"].startswith("https://"))
                self.assertEqual(p["checked"], "2026-11-29")


class Check(unittest.TestCase):
    def test_committed_doc_is_in_sync(self):
        self.assertEqual(cap.check(DOC, cap.load_inputs()), [])

    def test_check_cli_passes_on_committed_doc(self):
        run = subprocess.run([sys.executable, str(HERE / "capacity.py"), "--check", str(DOC)],
                             capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_stdout_reproduces_the_doc_tables(self):
        run = subprocess.run([sys.executable, str(HERE / "capacity.py")], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(cap.doc_blocks(run.stdout), cap.doc_blocks(DOC.read_text(encoding="utf-8")))

    def test_check_fails_on_a_stale_doc(self):
        text = DOC.read_text(encoding="utf-8")
        stale = text.replace("| 1× | messages |", "| 1× | messages (edited) |", 1)
        self.assertNotEqual(stale, text)
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "capacity.md"
            p.write_text(stale, encoding="utf-8")
            run = subprocess.run([sys.executable, str(HERE / "capacity.py"), "--check", str(p)],
                                 capture_output=True, text=True)
            self.assertEqual(run.returncode, 1)
            self.assertIn("dynamodb", run.stderr)
            # --write repairs it.
            subprocess.run([sys.executable, str(HERE / "capacity.py"), "--write", str(p)], check=True)
            self.assertEqual(p.read_text(encoding="utf-8"), text)

    def test_check_fails_when_a_block_is_missing(self):
        text = DOC.read_text(encoding="utf-8")
        blocks = cap.doc_blocks(text)
        start = text.index("<!-- capacity:begin quotas -->")
        end = text.index("<!-- capacity:end quotas -->") + len("<!-- capacity:end quotas -->")
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "capacity.md"
            p.write_text(text[:start] + text[end:], encoding="utf-8")
            problems = cap.check(p, cap.load_inputs())
        self.assertIn("quotas", blocks)
        self.assertTrue(any("quotas" in x and "missing" in x for x in problems))


if __name__ == "__main__":
    unittest.main()

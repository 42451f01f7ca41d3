#!/usr/bin/env python3
"""The capacity model of docs/capacity.md (Python 3.11, standard library only).

It reads every measured figure, assumption and price from
docs/capacity-inputs.json and prints the generated blocks of
docs/capacity.md, each between `<!-- capacity:begin NAME -->` and
`<!-- capacity:end NAME -->`:

    python3 scripts/capacity.py                       # print every block
    python3 scripts/capacity.py --write docs/capacity.md   # refresh the doc in place
    python3 scripts/capacity.py --check docs/capacity.md   # exit 1 if the doc is stale

Units: GiB = 2**30 bytes (what AWS bills as "GB"), a month is 730 hours,
"per day" figures are daily averages and "peak" is average x peak_factor.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "docs" / "capacity-inputs.json"

GIB = 2**30
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
SECONDS_PER_DAY = 86_400
TABLES = ("messages", "users", "groups", "connections")


# ------------------------------------------------------------------ inputs


def load_inputs(path: Path = INPUTS) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def node(inp: dict, path: str):
    cur = inp
    for part in path.split("."):
        cur = cur[part]
    return cur


def val(inp: dict, path: str):
    """The value at a dotted path (`load.peak_factor`)."""
    cur = node(inp, path)
    if isinstance(cur, dict) and "value" in cur:
        return cur["value"]
    return cur


def with_overrides(inp: dict, overrides: dict | None) -> dict:
    if not overrides:
        return inp
    out = copy.deepcopy(inp)
    for path, value in overrides.items():
        parent, _, leaf = path.rpartition(".")
        node(out, parent)[leaf]["value"] = value
    return out


def tiered(quantity: float, tiers: list) -> float:
    """Cost of `quantity` under [[size or None, unit price], ...] tiers."""
    cost, left = 0.0, quantity
    for size, price in tiers:
        take = left if size is None else min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    return cost


def price(inp: dict, name: str, quantity: float) -> float:
    p = inp["prices"][name]
    if "tiers" in p:
        return tiered(quantity, p["tiers"])
    return quantity * p["value"]


# ------------------------------------------------------- per-operation units
# Each formula below reproduces a row of docs/cost.md at the row's sizes
# (see calibration()); the model then applies it at the assumed sizes.


def msg_item_bytes(inp: dict, text: float) -> float:
    return text + val(inp, "measured.message_item_overhead_bytes")


def msg_wcu(inp: dict, text: float) -> int:
    """Write units of the message item: one per started KB."""
    return math.ceil(msg_item_bytes(inp, text) / 1024)


def send_wcu(inp: dict, text: float) -> int:
    """Message item + idempotency claim + sender's watermark."""
    return msg_wcu(inp, text) + 2


def group_send_wcu(inp: dict, text: float) -> int:
    """A group message is put in one transaction with an update of the
    sender's member item (which checks that the sender is still a member
    and records the message as their newest); a transaction bills both
    items twice (the member item: 2 units), plus the claim and the
    watermark."""
    return 2 * msg_wcu(inp, text) + 2 + 2


def group_list_units(inp: dict, members: float) -> int:
    """Strongly consistent Query of the group: meta + one item per member."""
    size = val(inp, "code.group_meta_item_bytes") + members * val(inp, "code.group_member_item_bytes")
    return math.ceil(size / 4096)


def group_read_units(inp: dict, members: float) -> int:
    """What a use of the member list costs: a group of at least
    code.member_cache_from_members members is cached by version (a strongly
    consistent get of the group item, 1 unit, on a hit); a smaller one is
    read whole (which costs no more)."""
    if members >= val(inp, "code.member_cache_from_members"):
        return 1
    return group_list_units(inp, members)


def member_items_units(inp: dict, members: float) -> int:
    """Strongly consistent Query of the member items (each member's newest
    message id): what a group ack reads to find the authors it covers."""
    return math.ceil(members * val(inp, "code.group_member_item_bytes") / 4096)


def lookup_units(inp: dict, users: float) -> float:
    return users * val(inp, "measured.connection_lookup_read_units")


def registry_listing_units(inp: dict) -> float:
    """One eventually consistent Query of the node registry (a few small
    items): what a conn-tier broadcast reads instead of the look-ups."""
    return val(inp, "measured.connection_lookup_read_units")


def broadcast_saving_units(inp: dict, members: float) -> float:
    """Read units a conn-tier node saves per group message by broadcasting
    (design (b) only: the Lambda functions hold no connections)."""
    if members < val(inp, "code.broadcast_from_members"):
        return 0.0
    return lookup_units(inp, members) - registry_listing_units(inp)


def sync_read_units(inp: dict, convs: float, with_news: float, missed: float, text: float) -> dict:
    """users: the membership Query (strong); messages: newest id of each
    conversation (eventually consistent, 0.5) and one strong Query of the
    missed messages per conversation with news."""
    users = math.ceil(convs * val(inp, "code.membership_item_bytes") / 4096)
    per_conv = missed / with_news if with_news else 0
    messages = 0.5 * convs + with_news * math.ceil(per_conv * msg_item_bytes(inp, text) / 4096)
    return {"users": users, "messages": messages}


def calibration(inp: dict) -> list[tuple[str, str, float, float]]:
    """(row, quantity, measured, model) for every docs/cost.md row used."""
    rows = val(inp, "measured.cost_rows")
    out = []

    def add(key, qty, model):
        out.append((rows[key]["source"].split("row ", 1)[1], qty, rows[key][qty_key(qty)], model))

    def qty_key(q):
        return {"write units": "write_units", "read units (request)": "read_units_request",
                "read units (fan-out)": "read_units_fanout", "posts": "posts", "calls": "calls"}[q]

    r = rows["dm_send_100b"]
    add("dm_send_100b", "write units", send_wcu(inp, r["text_bytes"]))
    add("dm_send_100b", "read units (request)", 1)
    add("dm_send_100b", "read units (fan-out)", lookup_units(inp, 2))
    r = rows["dm_send_1kb"]
    add("dm_send_1kb", "write units", send_wcu(inp, r["text_bytes"]))
    add("dm_send_first_1kb", "write units", send_wcu(inp, r["text_bytes"]) + 1)
    r = rows["group_send_1kb_100"]
    n = r["members"]
    add("group_send_1kb_100", "write units", group_send_wcu(inp, r["text_bytes"]))
    add("group_send_1kb_100", "read units (request)", 2)
    add("group_send_1kb_100", "read units (fan-out)", group_read_units(inp, n) + lookup_units(inp, n))
    add("group_send_1kb_100", "posts", n - 1)
    add("group_send_1kb_100", "calls", 5 + 1 + n)
    r = rows["group_send_broadcast_100"]
    add("group_send_broadcast_100", "read units (fan-out)",
        group_read_units(inp, n) + lookup_units(inp, n) - broadcast_saving_units(inp, n))
    add("group_send_broadcast_100", "posts", r["nodes"] - 1)
    r = rows["group_send_after_add_100"]
    add("group_send_after_add_100", "read units (fan-out)",
        1 + group_list_units(inp, n) + lookup_units(inp, n))
    r = rows["group_ack_100"]
    # the watermark in the membership and on the member item; membership,
    # newest id, the member items; the author and the reader
    add("group_ack_100", "write units", 1 + 1)
    add("group_ack_100", "read units (request)", 2 + member_items_units(inp, n))
    add("group_ack_100", "read units (fan-out)", lookup_units(inp, 2))
    add("group_ack_100", "posts", 1)
    r = rows["group_create_100"]
    n = r["members"]
    # + the creator's daily quota counter (one conditional update)
    add("group_create_100", "write units", 2 * n + 1 + 1)
    add("group_create_100", "calls", math.ceil(n / 25) + math.ceil((n + 1) / 25) + n + 1)
    r = rows["sync_10x1kb"]
    s = sync_read_units(inp, r["conversations"], r["conversations"], r["messages"], r["text_bytes"])
    add("sync_10x1kb", "read units (request)", s["users"] + s["messages"])
    add("sync_10x1kb", "calls", 1 + r["conversations"] + r["conversations"])
    r = rows["sync_device_10x1kb"]
    s = sync_read_units(inp, r["conversations"], r["conversations"], r["messages"], r["text_bytes"])
    # + the device's last use (a write) and its cursors (a Query)
    add("sync_device_10x1kb", "write units", 1)
    add("sync_device_10x1kb", "read units (request)", s["users"] + s["messages"] + 1)
    add("sync_device_10x1kb", "calls", 1 + r["conversations"] + r["conversations"] + 2)
    # per conversation: membership, newest id, the cursor's conditional
    # write; per frame: the device's record (strongly consistent)
    add("received", "write units", 1)
    add("received", "read units (request)", 2 + 1)
    add("received", "calls", 3 + 1)
    add("ack", "write units", 1)
    add("ack", "read units (request)", 2)
    add("ack", "read units (fan-out)", lookup_units(inp, 2))
    add("connect_disconnect", "write units", 4)
    return out


# ------------------------------------------------------------------ the model


@dataclass
class Op:
    """One kind of operation, counted per day."""

    name: str
    count: float
    formula: str
    units: dict = field(default_factory=dict)  # table -> [write units, read units] per op
    calls: float = 0  # DynamoDB requests per op
    frames_in: float = 0  # client frames (API Gateway messages received)
    frames_out: float = 0  # frames to clients (API Gateway messages sent)
    apigw_out: float = 0  # outbound messages as metered (32 KB increments)
    bytes_in: float = 0
    bytes_out: float = 0
    remote: float = 0  # frames a conn-tier node posts to another node (design b)
    lambdas: list = field(default_factory=list)  # (function, invocations per op, billed ms per op)
    node_extra_frames: float = 0  # connect/close handshakes on a conn-tier node

    def wru(self):
        return sum(w for w, _ in self.units.values())

    def rru(self):
        return sum(r for _, r in self.units.values())


def ms(inp: dict, calls: float = 0, posts: float = 0) -> float:
    return (val(inp, "lambda.handler_cpu_ms") + calls * val(inp, "lambda.dynamodb_call_ms")
            + posts * val(inp, "lambda.post_to_connection_ms"))


def rounds(k: float, inp: dict) -> int:
    return math.ceil(k / val(inp, "lambda.parallel_lookups")) if k > 0 else 0


def build(inp: dict, scale: float = 1.0) -> dict:
    """Every derived figure for `scale` x the load (users scale, behaviour does not)."""
    g = val(inp, "load.group_message_share")
    N = val(inp, "load.avg_group_size")
    text = val(inp, "load.avg_text_bytes")
    dau = val(inp, "load.daily_active_users") * scale
    per_user = val(inp, "load.messages_per_user_per_day")
    o = val(inp, "client.offline_delivery_share")
    live = 1 - o
    ack = val(inp, "client.acks_per_delivered_message")
    sessions_pu = val(inp, "client.sessions_per_user_per_day")
    minutes = val(inp, "client.connected_minutes_per_user_per_day")
    C = val(inp, "client.conversations_per_user")
    k = val(inp, "client.conversations_with_news_per_sync")
    small = val(inp, "frames.small_frame_bytes")
    msg_frame = text + val(inp, "frames.message_frame_overhead_bytes")
    rpi = val(inp, "lambda.fanout_records_per_invocation")
    receipts_to_all = val(inp, "code.receipt_audience") == "all members"

    messages = dau * per_user
    dm, grp = messages * (1 - g), messages * g
    deliveries = dm * 1 + grp * (N - 1)
    sessions = dau * sessions_pu
    missed = deliveries * o / sessions  # per session
    acks_dm, acks_grp = dm * ack, grp * (N - 1) * ack
    wcu_msg = msg_wcu(inp, text)
    gread = group_read_units(inp, N)
    r = {"scale": scale, "dau": dau, "messages": messages, "dm": dm, "grp": grp,
         "deliveries": deliveries, "sessions": sessions, "missed_per_session": missed,
         "acks_dm": acks_dm, "acks_grp": acks_grp, "wcu_msg": wcu_msg, "gread": gread,
         "N": N, "text": text}

    ops = []
    ops.append(Op(
        "1:1 send", dm, f"{n(messages)} × {1 - g:g}",
        units={"messages": [wcu_msg, 1], "users": [2, 0], "connections": [0, lookup_units(inp, 2)]},
        calls=4 + 2, frames_in=1, frames_out=1 + live, apigw_out=1 + live,
        bytes_in=text + small, bytes_out=small + live * msg_frame, remote=live,
        lambdas=[("send", 1, ms(inp, 4, 1)), ("fanout", 1 / rpi, ms(inp, 1, live))]))
    grp_posts = live * (N - 1)
    ops.append(Op(
        f"group send ({N:g} members)", grp, f"{n(messages)} × {g:g}",
        # the message put in a transaction with the update of the sender's
        # member item (the membership check; 2 units)
        units={"messages": [2 * wcu_msg, 1], "users": [2, 1], "groups": [2, gread],
               "connections": [0, lookup_units(inp, N)]},
        calls=5 + 1 + N, frames_in=1, frames_out=1 + grp_posts, apigw_out=1 + grp_posts,
        bytes_in=text + small, bytes_out=small + grp_posts * msg_frame, remote=grp_posts,
        lambdas=[("send", 1, ms(inp, 5, 1)),
                 ("fanout", 1 / rpi, ms(inp, 1 + rounds(N, inp), live * rounds(N - 1, inp)))]))
    new_dm = dau * val(inp, "client.new_direct_conversations_per_user_per_day")
    ops.append(Op(
        "first message of a 1:1 (enroll)", new_dm,
        f"{n(dau)} × {val(inp, 'client.new_direct_conversations_per_user_per_day'):g}",
        units={"users": [1, 0]}, calls=1, lambdas=[("send", 0, ms(inp, 1) - ms(inp))]))
    ops.append(Op(
        "ack, 1:1", acks_dm, f"{n(dm)} deliveries × {ack:g}",
        units={"users": [1, 1], "messages": [0, 1], "connections": [0, lookup_units(inp, 2)]},
        calls=3 + 2, frames_in=1, frames_out=live, apigw_out=live,
        bytes_in=small, bytes_out=live * small, remote=live,
        lambdas=[("ack", 1, ms(inp, 3 + 1, live))]))
    if receipts_to_all:
        g_units = {"users": [1, 1], "messages": [0, 1], "groups": [0, gread],
                   "connections": [0, lookup_units(inp, N)]}
        rec, g_calls, g_ms = live * (N - 1), 3 + 1 + N, ms(inp, 3 + 1 + rounds(N, inp), live * rounds(N - 1, inp))
    elif val(inp, "code.receipt_audience") == "authors":
        # The authors the ack newly covers, and the reader's other devices:
        # found from the member items (each member's newest message id),
        # and the range read when an author's newest is past the ack; the
        # reader's watermark written on its member item too.
        A = val(inp, "client.authors_per_group_ack")
        scan = val(inp, "client.group_acks_reading_their_range")
        others = val(inp, "client.connections_per_user") - 1
        covered = 1 / ack if ack else 0  # messages one ack covers
        g_units = {"users": [1, 1], "messages": [0, 1 + scan * math.ceil(covered * msg_item_bytes(inp, text) / 4096)],
                   "groups": [1, member_items_units(inp, N)],
                   "connections": [0, lookup_units(inp, A + 1)]}
        rec = live * (A + others)
        g_calls = 3 + 1 + 1 + scan + A + 1
        g_ms = ms(inp, 3 + 1 + 1 + scan + 1, live)
    else:  # receipts only to the sender of the acked message
        g_units = {"users": [1, 1], "messages": [0, 1], "connections": [0, lookup_units(inp, 1)]}
        rec, g_calls, g_ms = live, 3 + 1, ms(inp, 3 + 1, live)
    ops.append(Op(
        "ack, group", acks_grp, f"{n(grp)} × {N - 1:g} deliveries × {ack:g}",
        units=g_units, calls=g_calls, frames_in=1, frames_out=rec, apigw_out=rec,
        bytes_in=small, bytes_out=rec * small, remote=rec, lambdas=[("ack", 1, g_ms)]))
    sync = sync_read_units(inp, C, k, missed, text)
    # The device: marked used (one write) and its cursors read (one Query).
    ops.append(Op(
        "session: connect, sync, disconnect", sessions, f"{n(dau)} × {sessions_pu:g}",
        units={"connections": [4, 0], "users": [1, sync["users"] + 1], "messages": [0, sync["messages"]]},
        calls=2 + 1 + C + k + 2, frames_in=1, frames_out=missed + 1, apigw_out=missed + 1,
        bytes_in=small, bytes_out=missed * msg_frame + small, node_extra_frames=2,
        lambdas=[("authorizer", 1, ms(inp)), ("connect", 1, ms(inp, 1)), ("disconnect", 1, ms(inp, 1)),
                 ("sync", 1, ms(inp, 1 + math.ceil(C / val(inp, "lambda.parallel_newest_id_reads")) + k,
                                 missed + 1))]))
    # `received`: a device's cursors, per conversation a membership check,
    # its newest id and one conditional write, and per frame the device's
    # record, read strongly consistent (docs/cost.md).
    rf = val(inp, "client.received_frames_per_session")
    ri = val(inp, "client.received_items_per_frame")
    ops.append(Op(
        "received (a device's cursors)", sessions * rf, f"{n(sessions)} sessions × {rf:g}",
        units={"users": [ri, ri + 1], "messages": [0, ri]},
        calls=3 * ri + 1, frames_in=1, bytes_in=small + 50 * ri,
        lambdas=[("ack", 1, ms(inp, 3 * ri + 1))]))
    page_n = val(inp, "frames.history_page_messages")
    page_bytes = page_n * msg_frame
    pages = dau * val(inp, "client.history_pages_per_user_per_day")
    ops.append(Op(
        "history page", pages, f"{n(dau)} × {val(inp, 'client.history_pages_per_user_per_day'):g}",
        units={"users": [0, 1], "messages": [0, 0.5 * math.ceil(page_n * msg_item_bytes(inp, text) / 4096)]},
        calls=2, frames_in=1, frames_out=1,
        apigw_out=math.ceil(page_bytes / val(inp, "aws_limits.apigw_message_increment_bytes")),
        bytes_in=small, bytes_out=page_bytes, lambdas=[("history", 1, ms(inp, 2, 1))]))
    pings = dau * minutes / val(inp, "client.keepalive_interval_minutes")
    ops.append(Op(
        "keepalive ping", pings, f"{n(dau)} × {minutes:g} min / {val(inp, 'client.keepalive_interval_minutes'):g}",
        frames_in=1, frames_out=1, apigw_out=1, bytes_in=small, bytes_out=small,
        lambdas=[("default", 1, ms(inp, 0, 1))]))
    creates = dau * val(inp, "client.groups_created_per_user_per_day")
    bw = val(inp, "code.batch_write_items")
    wcalls = math.ceil(N / bw) + math.ceil((N + 1) / bw)
    ops.append(Op(
        f"create a group ({N:g} members)", creates,
        f"{n(dau)} × {val(inp, 'client.groups_created_per_user_per_day'):g}",
        units={"users": [N + 1, 0], "groups": [N + 1, 0], "connections": [0, lookup_units(inp, N)]},
        calls=wcalls + N + 1, frames_in=1, frames_out=1 + live * (N - 1), apigw_out=1 + live * (N - 1),
        bytes_in=small + 20 * N, bytes_out=small * (1 + live * (N - 1)), remote=live * (N - 1),
        lambdas=[("groups", 1, ms(inp, wcalls + rounds(N, inp), 1 + live * rounds(N - 1, inp)))]))
    r["ops"] = ops

    # ---- API Gateway
    per_month = DAYS_PER_MONTH
    r["frames_in_day"] = sum(op.count * op.frames_in for op in ops)
    r["frames_out_day"] = sum(op.count * op.frames_out for op in ops)
    r["apigw_msgs_day"] = r["frames_in_day"] + sum(op.count * op.apigw_out for op in ops)
    r["apigw_msgs_month"] = r["apigw_msgs_day"] * per_month
    r["conn_minutes_month"] = dau * val(inp, "client.connections_per_user") * minutes * per_month
    r["bytes_out_day"] = sum(op.count * op.bytes_out for op in ops)
    r["bytes_in_day"] = sum(op.count * op.bytes_in for op in ops)
    r["egress_gib_month"] = r["bytes_out_day"] * per_month / GIB

    # ---- Lambda
    mem_gb = val(inp, "deployed.lambda_memory_mb") / 1024
    init = val(inp, "measured.lambda_init_ms")
    cold = val(inp, "lambda.cold_start_fraction")
    fns: dict[str, dict] = {}
    for op in ops:
        for fn, inv, billed in op.lambdas:
            f = fns.setdefault(fn, {"invocations": 0.0, "ms": 0.0})
            f["invocations"] += op.count * inv
            f["ms"] += op.count * billed
    for fn, f in fns.items():
        f["ms"] += f["invocations"] * cold * init[fn]
        f["avg_ms"] = f["ms"] / f["invocations"] if f["invocations"] else 0
        f["gb_s_day"] = f["ms"] / 1000 * mem_gb
        f["peak_concurrency"] = f["ms"] / 1000 / SECONDS_PER_DAY * val(inp, "load.peak_factor")
    r["lambda"] = fns
    r["lambda_invocations_month"] = sum(f["invocations"] for f in fns.values()) * per_month
    r["lambda_gb_s_month"] = sum(f["gb_s_day"] for f in fns.values()) * per_month
    r["lambda_log_gib_month"] = r["lambda_invocations_month"] * val(inp, "lambda.log_bytes_per_invocation") / GIB
    r["lambda_peak_concurrency"] = sum(f["peak_concurrency"] for f in fns.values())
    r["fanout_record_ms"] = {"1:1": ms(inp, 1, live),
                             "group": ms(inp, 1 + rounds(N, inp), live * rounds(N - 1, inp))}

    # ---- DynamoDB
    def table_units(op_list):
        t = {name: [0.0, 0.0] for name in TABLES}
        for op in op_list:
            for name, (w, rd) in op.units.items():
                t[name][0] += op.count * w
                t[name][1] += op.count * rd
        return t

    r["ddb"] = table_units(ops)

    # ---- storage
    item_overhead = val(inp, "aws_limits.ddb_item_storage_overhead_bytes")
    r["msg_stored_bytes"] = msg_item_bytes(inp, text) + item_overhead
    r["msg_stored_bytes_worst"] = msg_item_bytes(inp, val(inp, "load.worst_text_bytes")) + item_overhead
    r["storage_msgs_gib_day"] = messages * r["msg_stored_bytes"] / GIB
    r["storage_msgs_gib_day_worst"] = messages * r["msg_stored_bytes_worst"] / GIB
    idem = val(inp, "code.idempotency_record_bytes") + item_overhead
    r["storage_idem_gib"] = messages * idem * val(inp, "code.idempotency_ttl_days") / GIB
    memb = val(inp, "code.membership_item_bytes") + item_overhead
    r["storage_memberships_gib_day"] = (new_dm * 2 + creates * N) * memb / GIB
    r["storage_growth_gib_month"] = (r["storage_msgs_gib_day"] + r["storage_memberships_gib_day"]) * per_month
    return r


def storage_gib(r: dict, month: int) -> float:
    """Average table size during month `month` (1 = the first)."""
    return (month - 0.5) * r["storage_growth_gib_month"] + r["storage_idem_gib"]


def ddb_costs(inp: dict, units: dict) -> dict:
    """Monthly request cost per table: on-demand and provisioned."""
    out = {}
    util = val(inp, "prices.ddb_provisioned_utilisation")
    for name, (w, rd) in units.items():
        od = price(inp, "ddb_ondemand_wru", w * DAYS_PER_MONTH) + price(inp, "ddb_ondemand_rru", rd * DAYS_PER_MONTH)
        prov = HOURS_PER_MONTH * (
            w / SECONDS_PER_DAY / util * val(inp, "prices.ddb_provisioned_wcu_hour")
            + rd / SECONDS_PER_DAY / util * val(inp, "prices.ddb_provisioned_rcu_hour"))
        out[name] = {"on_demand": od, "provisioned": prov}
    return out


def selfhosted(inp: dict, r: dict) -> dict:
    """Design (b): conn-tier nodes behind an NLB, DynamoDB as the store."""
    peak = val(inp, "load.peak_factor")
    frame_us = (val(inp, "measured.bench_direct_server_cpu_percent") / 100 * 1e6
                / val(inp, "measured.bench_direct_acked_per_s") / val(inp, "measured.bench_frames_per_message"))
    ops = r["ops"]
    frames = sum(op.count * (op.frames_in + op.frames_out + op.node_extra_frames) for op in ops)
    calls = sum(op.count * op.calls for op in ops)
    remote = sum(op.count * op.remote for op in ops)
    cpu_us_day = (frames * frame_us + calls * val(inp, "selfhosted.dynamodb_call_cpu_us")
                  + remote * val(inp, "selfhosted.cross_node_post_cpu_us"))
    speed = val(inp, "selfhosted.core_speed_vs_bench")
    peak_cores = cpu_us_day / 1e6 / SECONDS_PER_DAY * peak / speed
    vcpus = val(inp, "selfhosted.instance_vcpus")
    target = val(inp, "selfhosted.target_utilisation_at_peak")
    nodes_cpu = math.ceil(peak_cores / (vcpus * target))
    conn_bytes = val(inp, "measured.rss_per_idle_connection_kb") * 1024 + val(inp, "selfhosted.kernel_bytes_per_connection")
    conns_per_node = (val(inp, "selfhosted.instance_memory_gib") * GIB * val(inp, "selfhosted.usable_memory_fraction")
                      * target / conn_bytes)
    avg_conns = r["dau"] * val(inp, "client.connections_per_user") * val(inp, "client.connected_minutes_per_user_per_day") / 1440
    peak_conns = avg_conns * peak
    nodes_mem = math.ceil(peak_conns / conns_per_node)
    nodes = max(val(inp, "selfhosted.min_nodes"), nodes_cpu, nodes_mem)
    # NLB (TLS listener): NLCUs of the average hour, the largest dimension.
    new_per_s = r["sessions"] / SECONDS_PER_DAY
    gib_per_hour = (r["bytes_in_day"] + r["bytes_out_day"]) / 24 / GIB
    nlcu = max(new_per_s / val(inp, "prices.nlcu_tls_new_per_s"), avg_conns / val(inp, "prices.nlcu_tls_active"),
               gib_per_hour / val(inp, "prices.nlcu_gib_per_hour"))
    hb_writes_day = nodes * SECONDS_PER_DAY / val(inp, "selfhosted.heartbeat_interval_s")
    inter_az_gib_month = (remote * val(inp, "selfhosted.cross_node_post_bytes") * val(inp, "selfhosted.inter_az_fraction")
                          * DAYS_PER_MONTH / GIB)
    return {"frame_us": frame_us, "frames_day": frames, "calls_day": calls, "remote_day": remote,
            "cpu_us_day": cpu_us_day, "peak_cores": peak_cores, "nodes_cpu": nodes_cpu, "conn_bytes": conn_bytes,
            "conns_per_node": conns_per_node, "avg_conns": avg_conns, "peak_conns": peak_conns,
            "nodes_mem": nodes_mem, "nodes": nodes, "new_per_s": new_per_s, "gib_per_hour": gib_per_hour,
            "nlcu": nlcu, "heartbeat_writes_day": hb_writes_day, "inter_az_gib_month": inter_az_gib_month}


def costs(inp: dict, scale: float = 1.0, month: int = 12) -> dict:
    """Monthly line items of (a) and (b) in `month` (storage grows every month)."""
    r = build(inp, scale)
    b = selfhosted(inp, r)
    gib = storage_gib(r, month)
    storage = price(inp, "ddb_storage_gib_month", gib) + price(inp, "ddb_pitr_gib_month", gib)
    egress = price(inp, "data_transfer_out_gib", r["egress_gib_month"])
    ddb_a = ddb_costs(inp, r["ddb"])
    units_b = copy.deepcopy(r["ddb"])
    units_b["connections"][0] += b["heartbeat_writes_day"]
    units_b["connections"][1] -= r["grp"] * broadcast_saving_units(inp, r["N"])
    ddb_b = ddb_costs(inp, units_b)
    a = {
        "API Gateway messages": price(inp, "apigw_ws_message", r["apigw_msgs_month"]),
        "API Gateway connection minutes": price(inp, "apigw_ws_connection_minute", r["conn_minutes_month"]),
        "Lambda requests": price(inp, "lambda_request", r["lambda_invocations_month"]),
        "Lambda GB-seconds": price(inp, "lambda_arm_gb_s", r["lambda_gb_s_month"]),
        "Lambda logs": price(inp, "lambda_logs_gib", r["lambda_log_gib_month"]),
        "DynamoDB requests (on-demand)": sum(c["on_demand"] for c in ddb_a.values()),
        "DynamoDB storage + PITR": storage,
        "DynamoDB stream reads (Lambda trigger)": 0.0,
        "data transfer out": egress,
    }
    nodes_cost = b["nodes"] * val(inp, "prices.ec2_instance_hour") * HOURS_PER_MONTH
    bb = {
        "conn-tier nodes (EC2)": nodes_cost,
        "node disks (EBS)": b["nodes"] * price(inp, "ebs_gp3_gib_month", val(inp, "selfhosted.ebs_gib_per_node")),
        "NLB (hours + NLCU)": HOURS_PER_MONTH * (val(inp, "prices.nlb_hour") + b["nlcu"] * val(inp, "prices.nlcu_hour")),
        "DynamoDB requests (on-demand)": sum(c["on_demand"] for c in ddb_b.values()),
        "DynamoDB storage + PITR": storage,
        "data transfer out": egress,
        "inter-AZ (node to node posts)": price(inp, "inter_az_gib", b["inter_az_gib_month"]),
    }
    prov_a = sum(c["provisioned"] for c in ddb_a.values())
    prov_b = sum(c["provisioned"] for c in ddb_b.values())
    conn_saving = ddb_costs(inp, {"connections": r["ddb"]["connections"]})["connections"]["on_demand"]
    return {"r": r, "b": b, "a_items": a, "b_items": bb, "a": sum(a.values()), "b_total": sum(bb.values()),
            "a_prov": sum(a.values()) - a["DynamoDB requests (on-demand)"] + prov_a,
            "b_prov": sum(bb.values()) - bb["DynamoDB requests (on-demand)"] + prov_b,
            "ddb_a": ddb_a, "ddb_b": ddb_b, "units_b": units_b, "storage_gib": gib,
            "b_no_conn_table": sum(bb.values()) - conn_saving - ddb_costs(
                inp, {"c": [b["heartbeat_writes_day"], 0]})["c"]["on_demand"]}


def crossover(inp: dict, extra_b: float = 0.0) -> float | None:
    """Smallest load (x the mission) at which (b) costs no more than (a)."""
    def diff(s):
        c = costs(inp, s)
        return c["b_total"] + extra_b - c["a"]

    grid = [10 ** (e / 20) for e in range(-8 * 20, 2 * 20 + 1)]
    prev = None
    for s in grid:
        if diff(s) <= 0:
            if prev is None:
                return s
            lo, hi = prev, s
            for _ in range(60):
                mid = math.sqrt(lo * hi)
                lo, hi = (lo, mid) if diff(mid) <= 0 else (mid, hi)
            return hi
        prev = s
    return None


# ------------------------------------------------------------------ formatting


def n(x: float) -> str:
    ax = abs(x)
    if ax >= 1e12:
        return f"{x / 1e12:.2f}T"
    if ax >= 1e9:
        return f"{x / 1e9:.2f}B"
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}K"
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if x == int(x):
        return f"{int(x)}"
    return f"{x:.2f}"


def usd(x: float) -> str:
    if abs(x) < 10:
        return f"${x:,.2f}"
    return f"${x:,.0f}"


def gib(x: float) -> str:
    if x >= 1024 * 1024:
        return f"{x / 1024 / 1024:.2f} PiB"
    if x >= 1024:
        return f"{x / 1024:.1f} TiB"
    return f"{x:,.0f} GiB"


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


KIND = {"load": "the mission", "frames": "the mission", "measured": "measured", "code": "from the code",
        "lambda": "from the code", "deployed": "deployed", "aws_limits": "AWS quota or fact", "selfhosted": "published",
        "client": "", "hotspots": ""}


def leaf_rows(inp: dict, kinds: tuple[str, ...]) -> list[list]:
    rows = []
    for section, items in inp.items():
        if section.startswith("_") or not isinstance(items, dict):
            continue
        if section == "prices" and "assumed" not in kinds:
            continue
        for name, leaf in items.items():
            if name.startswith("_") or not isinstance(leaf, dict) or "value" not in leaf:
                continue
            kind = "assumed" if "why" in leaf else "measured/derived"
            if kind not in kinds:
                continue
            v = leaf["value"]
            v = f"{v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) >= 1000 else v
            row = [f"`{section}.{name}`", f"{v} {leaf.get('unit', '')}".strip()]
            if kind != "assumed":
                row.append(KIND.get(section, ""))
            rows.append(row + [leaf.get("why", leaf.get("source", ""))])
    return rows


# ------------------------------------------------------------------ blocks


def block_summary(inp):
    c1, c10 = costs(inp, 1), costs(inp, val(inp, "load.scale_10x"))
    x = crossover(inp)
    x_ops = crossover(inp, val(inp, "selfhosted.ops_usd_per_month"))
    dau = val(inp, "load.daily_active_users")
    per_s = dau * val(inp, "load.messages_per_user_per_day") / SECONDS_PER_DAY
    rows = [
        ["(a) serverless: API Gateway + Lambda + DynamoDB", usd(c1["a"]), usd(c10["a"])],
        ["(b) self-hosted: conn-tier nodes + NLB + DynamoDB", usd(c1["b_total"]), usd(c10["b_total"])],
        ["(a) / (b)", f"{c1['a'] / c1['b_total']:.1f}×", f"{c10['a'] / c10['b_total']:.1f}×"],
        ["of which DynamoDB storage + PITR (same in both)", usd(c1["a_items"]["DynamoDB storage + PITR"]),
         usd(c10["a_items"]["DynamoDB storage + PITR"])],
        ["conn-tier nodes in (b)", f"{c1['b']['nodes']} × {val(inp, 'selfhosted.instance_type')}",
         f"{c10['b']['nodes']} × {val(inp, 'selfhosted.instance_type')}"],
    ]
    out = table(["monthly cost, month 12, us-east-1 list prices", "1× (10M DAU)", "10× (100M DAU)"], rows)
    out += "\n\n"
    out += (f"**Crossover:** (b) costs less than (a) from **{n(x * dau)} daily active users** "
            f"({x:.2g}× the mission, {n(x * per_s)} messages/s on average) on infrastructure alone; "
            f"with {usd(val(inp, 'selfhosted.ops_usd_per_month'))} a month of people time added to (b), "
            f"from {n(x_ops * dau)} users ({x_ops:.2g}×).")
    return out


def block_assumptions(inp):
    return table(["input", "value", "why"], leaf_rows(inp, ("assumed",)), "lll")


def block_measured(inp):
    rows = leaf_rows(inp, ("measured/derived",))
    cr = val(inp, "measured.cost_rows")
    for key, row in cr.items():
        if key.startswith("_"):
            continue
        rows.append([f"`measured.cost_rows.{key}`",
                     f"{row['write_units']:g} W, {row['read_units_request'] + row['read_units_fanout']:g} R, "
                     f"{row['posts']} posts, {row['calls']} calls", "measured", row["source"]])
    init = val(inp, "measured.lambda_init_ms")
    rows.append(["`measured.lambda_init_ms`",
                 ", ".join(f"{k} {v:g}" for k, v in init.items() if not k.startswith("_")) + " ms", "measured",
                 init["_source"]])
    return table(["input", "value", "kind", "source"], rows, "llll")


def fmt_price(v: float) -> str:
    return f"{v * 1e6:g} per million" if 0 < v < 1e-4 else f"{v:g}"


def block_prices(inp):
    rows = []
    for name, p in inp["prices"].items():
        if name.startswith("_"):
            continue
        if "tiers" in p:
            v = " / ".join(fmt_price(t[1]) + ((" (first " if i == 0 else " (next ")
                                          + (n(t[0]) if t[0] >= 1e6 else f"{t[0]:,}") + ")" if t[0] else " (rest)")
                           for i, t in enumerate(p["tiers"]))
        else:
            v = fmt_price(p["value"])
        rows.append([f"`{name}`", v, p["unit"], p.get("source", p.get("why", "")), p.get("checked", "")])
    return table(["price", "value", "unit", "source", "checked"], rows, "lllll")


def block_calibration(inp):
    rows = []
    for row, qty, measured, model in calibration(inp):
        rows.append([row, qty, f"{measured:g}", f"{model:g}", "yes" if abs(measured - model) < 1e-9 else "**no**"])
    return table(["docs/cost.md row", "quantity", "measured", "model", "match"], rows, "llrrl")


def block_load(inp):
    r = build(inp)
    peak = val(inp, "load.peak_factor")
    dau, per = val(inp, "load.daily_active_users"), val(inp, "load.messages_per_user_per_day")
    minutes = val(inp, "client.connected_minutes_per_user_per_day")
    N = r["N"]
    rows = [
        ["messages", n(r["messages"]), f"{n(dau)} users × {per:g}", n(r["messages"] / SECONDS_PER_DAY),
         n(r["messages"] / SECONDS_PER_DAY * peak)],
        ["… 1:1", n(r["dm"]), f"× {1 - val(inp, 'load.group_message_share'):g}", n(r["dm"] / SECONDS_PER_DAY), ""],
        ["… to groups", n(r["grp"]), f"× {val(inp, 'load.group_message_share'):g}",
         n(r["grp"] / SECONDS_PER_DAY), ""],
        ["deliveries (message to a recipient)", n(r["deliveries"]), f"{n(r['dm'])} × 1 + {n(r['grp'])} × {N - 1:g}",
         n(r["deliveries"] / SECONDS_PER_DAY), n(r["deliveries"] / SECONDS_PER_DAY * peak)],
        ["acks", n(r["acks_dm"] + r["acks_grp"]),
         f"{n(r['deliveries'])} × {val(inp, 'client.acks_per_delivered_message'):g}",
         n((r["acks_dm"] + r["acks_grp"]) / SECONDS_PER_DAY), n((r["acks_dm"] + r["acks_grp"]) / SECONDS_PER_DAY * peak)],
        ["sessions (connects)", n(r["sessions"]), f"{n(dau)} × {val(inp, 'client.sessions_per_user_per_day'):g}",
         n(r["sessions"] / SECONDS_PER_DAY), n(r["sessions"] / SECONDS_PER_DAY * peak)],
        ["missed messages per session (synced)", n(r["missed_per_session"]),
         f"{n(r['deliveries'])} × {val(inp, 'client.offline_delivery_share'):g} / {n(r['sessions'])}", "", ""],
        ["concurrent connections", n(dau * minutes / 1440), f"{n(dau)} × {minutes:g} min / 1,440", "",
         n(dau * minutes / 1440 * peak)],
    ]
    return table(["per day (1×)", "count", "formula", "average /s", f"peak /s (× {peak:g})"], rows, "lrlrr")


def block_ops(inp):
    r = build(inp)
    rows = []
    for op in r["ops"]:
        fns = ", ".join(f"{fn} {billed:.0f} ms" if inv else f"{fn} +{billed:.0f} ms"
                        for fn, inv, billed in op.lambdas) or "—"
        rows.append([op.name, n(op.count), op.formula, f"{op.wru():g}", f"{op.rru():g}",
                     f"{op.frames_in:g} + {op.apigw_out:.3g}", f"{op.calls:g}", fns])
    return table(["operation (1×)", "per day", "formula", "write units", "read units", "API GW msgs in + out",
                  "DynamoDB calls", "Lambda billed per op"], rows, "lrlrrrrl")


def block_apigw(inp):
    rows = []
    for s in (1, val(inp, "load.scale_10x")):
        r = build(inp, s)
        msgs = price(inp, "apigw_ws_message", r["apigw_msgs_month"])
        mins = price(inp, "apigw_ws_connection_minute", r["conn_minutes_month"])
        rows.append([f"{s:g}×", n(r["frames_in_day"]), n(r["apigw_msgs_day"] - r["frames_in_day"]),
                     n(r["apigw_msgs_month"]), usd(msgs), n(r["conn_minutes_month"]), usd(mins)])
    return table(["load", "frames in /day", "messages out /day", "messages /month", "$ messages",
                  "connection-minutes /month", "$ minutes"], rows)


def block_receipts(inp):
    r = build(inp)
    per = {op.name: op.count * (op.frames_in + op.apigw_out) for op in r["ops"]}
    total = sum(per.values())
    rows = [[k, n(v), f"{v / total:.0%}"] for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v]
    return table(["API Gateway messages by operation (1×)", "per day", "share"], rows)


def receipts_out_day(r: dict) -> float:
    """Receipts posted a day: what the acks send out."""
    return sum(op.count * op.apigw_out for op in r["ops"] if op.name.startswith("ack, "))


ACK_RATES = (0.5, 0.25, 0.1, 0.05, 0.0)


def block_ack_floor(inp):
    """(a) as acks per delivered message fall to none: how low (a) goes
    with everything else as it is, and the receipts' share."""
    rows = []
    for ack in ACK_RATES:
        c = costs(with_overrides(inp, {"client.acks_per_delivered_message": ack}), 1)
        r = c["r"]
        rows.append([f"{ack:g}", usd(c["a"]), usd(c["a_items"]["API Gateway messages"]),
                     usd(c["a_items"]["DynamoDB requests (on-demand)"]),
                     n(receipts_out_day(r)), f"{receipts_out_day(r) / r['apigw_msgs_day']:.1%}"])
    return table(["acks per delivered message (1×)", "(a) total", "(a) API GW messages",
                  "(a) DynamoDB requests", "receipts out /day", "receipts' share of API GW messages"],
                 rows, "lrrrrr")


def block_lambda(inp):
    r = build(inp)
    mem = val(inp, "deployed.lambda_memory_mb")
    rows = []
    for fn, f in sorted(r["lambda"].items(), key=lambda kv: -kv[1]["gb_s_day"]):
        rows.append([fn, n(f["invocations"]), f"{f['avg_ms']:.1f}", n(f["gb_s_day"]), n(f["peak_concurrency"])])
    rows.append(["**total**", n(sum(f["invocations"] for f in r["lambda"].values())), "",
                 n(sum(f["gb_s_day"] for f in r["lambda"].values())), n(r["lambda_peak_concurrency"])])
    out = table([f"function ({mem} MB, 1×)", "invocations /day", "avg billed ms", "GB-s /day",
                 "peak concurrency"], rows)
    c = costs(inp)["a_items"]
    out += "\n\n" + table(["Lambda, per month (1×)", "quantity", "cost"], [
        ["requests", n(r["lambda_invocations_month"]), usd(c["Lambda requests"])],
        ["GB-seconds", n(r["lambda_gb_s_month"]), usd(c["Lambda GB-seconds"])],
        ["log ingestion", gib(r["lambda_log_gib_month"]), usd(c["Lambda logs"])],
    ])
    return out


def block_dynamodb(inp):
    rows = []
    peak = val(inp, "load.peak_factor")
    for s in (1, val(inp, "load.scale_10x")):
        c = costs(inp, s)
        units = c["r"]["ddb"]
        for name in TABLES:
            w, rd = units[name]
            rows.append([f"{s:g}×", name, n(w), n(rd), n(w / SECONDS_PER_DAY * peak), n(rd / SECONDS_PER_DAY * peak),
                         usd(c["ddb_a"][name]["on_demand"]), usd(c["ddb_a"][name]["provisioned"])])
        rows.append([f"{s:g}×", "**all**", n(sum(u[0] for u in units.values())),
                     n(sum(u[1] for u in units.values())), "", "",
                     usd(sum(x["on_demand"] for x in c["ddb_a"].values())),
                     usd(sum(x["provisioned"] for x in c["ddb_a"].values()))])
    util = val(inp, "prices.ddb_provisioned_utilisation")
    return table(["load", "table", "write units /day", "read units /day", "peak WRU/s", "peak RRU/s",
                  "on-demand $/month", f"provisioned $/month (at {util:.0%})"], rows, "llrrrrrr")


def block_storage(inp):
    r = build(inp)
    r10 = build(inp, val(inp, "load.scale_10x"))
    text, worst = val(inp, "load.avg_text_bytes"), val(inp, "load.worst_text_bytes")
    ovh = val(inp, "measured.message_item_overhead_bytes")
    item = val(inp, "aws_limits.ddb_item_storage_overhead_bytes")
    idem = val(inp, "code.idempotency_record_bytes")
    ttl = val(inp, "code.idempotency_ttl_days")
    rows = [
        ["message item, average text", f"{text:g} + {ovh:g} + {item:g} = {r['msg_stored_bytes']:g} B",
         gib(r["storage_msgs_gib_day"]), gib(r["storage_msgs_gib_day"] * 365), gib(r10["storage_msgs_gib_day"] * 365)],
        ["message item, every text 10 KB (worst case)", f"{worst:g} + {ovh:g} + {item:g} = {r['msg_stored_bytes_worst']:g} B",
         gib(r["storage_msgs_gib_day_worst"]), gib(r["storage_msgs_gib_day_worst"] * 365),
         gib(r10["storage_msgs_gib_day_worst"] * 365)],
        ["idempotency records (TTL 7 days: a constant, not growth)", f"{idem:g} + {item:g} = {idem + item:g} B × {ttl:g} days",
         gib(r["storage_idem_gib"]) + " held", gib(r["storage_idem_gib"]) + " held", gib(r10["storage_idem_gib"]) + " held"],
        ["memberships (new conversations)", f"{val(inp, 'code.membership_item_bytes'):g} + {item:g} B each",
         gib(r["storage_memberships_gib_day"]), gib(r["storage_memberships_gib_day"] * 365),
         gib(r10["storage_memberships_gib_day"] * 365)],
    ]
    out = table(["what is stored", "bytes per item", "per day (1×)", "per year (1×)", "per year (10×)"], rows, "llrrr")
    rate = val(inp, "prices.ddb_storage_gib_month") + val(inp, "prices.ddb_pitr_gib_month")
    rows2 = []
    for month in (1, 12, 24, 36):
        g1, g10 = storage_gib(r, month), storage_gib(r10, month)
        rows2.append([month, gib(g1), usd(g1 * rate), gib(g10), usd(g10 * rate),
                      usd(g1 * (val(inp, "prices.ddb_storage_ia_gib_month") + val(inp, "prices.ddb_pitr_gib_month")))])
    out += "\n\n" + table(["month", "table size (1×)", f"$ storage + PITR (1×, ${rate:g}/GiB)", "table size (10×)",
                           "$ storage + PITR (10×)", "1× if Standard-IA"], rows2)
    return out


def block_selfhosted(inp):
    rows = []
    for s in (1, val(inp, "load.scale_10x")):
        r = build(inp, s)
        b = selfhosted(inp, r)
        rows.append([f"{s:g}×", n(b["frames_day"]), n(b["calls_day"]), n(b["remote_day"]), f"{b['peak_cores']:.1f}",
                     b["nodes_cpu"], n(b["peak_conns"]), n(b["conns_per_node"]), b["nodes_mem"], f"**{b['nodes']}**",
                     f"{b['nlcu']:.0f}"])
    b = selfhosted(inp, build(inp))
    head = table(["load", "frames /day", "DynamoDB calls /day", "node-to-node posts /day", "peak cores",
                  "nodes for CPU", "peak connections", "connections per node", "nodes for memory", "nodes",
                  "NLCU (avg hour)"], rows)
    v = val(inp, "selfhosted.instance_vcpus")
    t = val(inp, "selfhosted.target_utilisation_at_peak")
    per_core = val(inp, "measured.bench_direct_acked_per_s") / (val(inp, "measured.bench_direct_server_cpu_percent") / 100)
    formulas = [
        ["measured throughput per core", f"{n(val(inp, 'measured.bench_direct_acked_per_s'))} msg/s / "
                                         f"{val(inp, 'measured.bench_direct_server_cpu_percent') / 100:g} cores",
         f"{n(per_core)} msg/s"],
        ["CPU per frame", f"{val(inp, 'measured.bench_direct_server_cpu_percent'):g}% × 1 s / "
                          f"{n(val(inp, 'measured.bench_direct_acked_per_s'))} msg/s / "
                          f"{val(inp, 'measured.bench_frames_per_message'):g} frames", f"{b['frame_us']:.2f} µs"],
        ["CPU per day", f"frames × {b['frame_us']:.2f} µs + calls × {val(inp, 'selfhosted.dynamodb_call_cpu_us'):g} µs"
                        f" + node-to-node posts × {val(inp, 'selfhosted.cross_node_post_cpu_us'):g} µs",
         f"{b['cpu_us_day'] / 1e6:,.0f} core-s"],
        ["peak cores", f"CPU per day / 86,400 × {val(inp, 'load.peak_factor'):g}", f"{b['peak_cores']:.1f}"],
        ["nodes for CPU", f"⌈peak cores / ({v:g} cores × {t:g})⌉", str(b["nodes_cpu"])],
        ["memory per connection", f"{val(inp, 'measured.rss_per_idle_connection_kb'):g} KiB RSS + "
                                  f"{val(inp, 'selfhosted.kernel_bytes_per_connection'):g} B kernel",
         f"{b['conn_bytes']:,.0f} B"],
        ["connections per node", f"{val(inp, 'selfhosted.instance_memory_gib'):g} GiB × "
                                 f"{val(inp, 'selfhosted.usable_memory_fraction'):g} × {t:g} / {b['conn_bytes']:,.0f} B",
         n(b["conns_per_node"])],
        ["NLCU", f"max(new/s / {val(inp, 'prices.nlcu_tls_new_per_s'):g}, active / "
                 f"{n(val(inp, 'prices.nlcu_tls_active'))}, GiB per hour / {val(inp, 'prices.nlcu_gib_per_hour'):g}) = "
                 f"max({b['new_per_s'] / val(inp, 'prices.nlcu_tls_new_per_s'):.0f}, "
                 f"{b['avg_conns'] / val(inp, 'prices.nlcu_tls_active'):.0f}, {b['gib_per_hour']:.0f})",
         f"{b['nlcu']:.0f}"],
    ]
    return head + "\n\n" + table(["(1×)", "formula", "value"], formulas, "llr")


def block_costs(inp):
    c1, c10 = costs(inp, 1), costs(inp, val(inp, "load.scale_10x"))
    rows = []
    for k in c1["a_items"]:
        rows.append([f"(a) {k}", usd(c1["a_items"][k]), usd(c10["a_items"][k])])
    rows.append(["**(a) total**", f"**{usd(c1['a'])}**", f"**{usd(c10['a'])}**"])
    for k in c1["b_items"]:
        rows.append([f"(b) {k}", usd(c1["b_items"][k]), usd(c10["b_items"][k])])
    rows.append(["**(b) total**", f"**{usd(c1['b_total'])}**", f"**{usd(c10['b_total'])}**"])
    util = val(inp, "prices.ddb_provisioned_utilisation")
    rows.append([f"(a) total with provisioned DynamoDB ({util:.0%} utilisation)", usd(c1["a_prov"]), usd(c10["a_prov"])])
    rows.append([f"(b) total with provisioned DynamoDB ({util:.0%} utilisation)", usd(c1["b_prov"]), usd(c10["b_prov"])])
    rows.append(["(b) variant: no connection table (user-affine routing)", usd(c1["b_no_conn_table"]),
                 usd(c10["b_no_conn_table"])])
    return table(["per month, month 12 (storage of 11.5 months)", "1×", "10×"], rows)


def block_crossover(inp):
    dau = val(inp, "load.daily_active_users")
    per_s = dau * val(inp, "load.messages_per_user_per_day") / SECONDS_PER_DAY
    ops = val(inp, "selfhosted.ops_usd_per_month")
    rows = []
    for label, extra in (("infrastructure only", 0.0), (f"(b) + {usd(ops)}/month of people time", ops)):
        x = crossover(inp, extra)
        c = costs(inp, x)
        rows.append([label, f"{x:.3g}×", n(x * dau), n(x * per_s), usd(c["a"]), usd(c["b_total"] + extra)])
    return table(["crossover", "load", "daily active users", "messages/s (avg)", "(a) at that load",
                  "(b) at that load"], rows)


def block_quotas(inp):
    peak = val(inp, "load.peak_factor")
    rows = []
    lim = lambda p: val(inp, f"aws_limits.{p}")  # noqa: E731
    res = {}
    for s in (1, val(inp, "load.scale_10x")):
        r = build(inp, s)
        c = costs(inp, s)
        days_1 = r["storage_msgs_gib_day"]
        ddb = r["ddb"]
        fan = r["lambda"]["fanout"]
        fan_conc = fan["peak_concurrency"]
        msgs_w_peak = ddb["messages"][0] / SECONDS_PER_DAY * peak
        msgs_r_peak = ddb["messages"][1] / SECONDS_PER_DAY * peak
        parts_tp = math.ceil(max(msgs_w_peak / lim("ddb_partition_wcu"), msgs_r_peak / lim("ddb_partition_rcu")))
        res[s] = {
            "in": r["frames_in_day"] / SECONDS_PER_DAY * peak,
            "out": (r["apigw_msgs_day"] - r["frames_in_day"]) / SECONDS_PER_DAY * peak,
            "new": r["sessions"] / SECONDS_PER_DAY * peak,
            "conc": r["lambda_peak_concurrency"],
            "fan": fan_conc,
            "parts_tp": parts_tp,
            "parts_day1": max(parts_tp, math.ceil(days_1 / lim("ddb_partition_gib"))),
            "tables": {t: (ddb[t][0] / SECONDS_PER_DAY * peak, ddb[t][1] / SECONDS_PER_DAY * peak) for t in TABLES},
            "c": c,
        }
    s10 = val(inp, "load.scale_10x")
    a, b = res[1], res[s10]
    rows.append(["API Gateway: client frames in (account, all APIs)", f"{n(lim('apigw_account_rps'))}/s (burst 5,000)",
                 n(a["in"]), n(b["in"]), "raise; also the stage's own ThrottlingRateLimit (10,000) in infra/template.yaml"])
    rows.append(["API Gateway: @connections posts out", "not published as a separate quota", n(a["out"]), n(b["out"]),
                 f"ask AWS whether posts count against the account rate ({a['out'] / a['in']:.1f}× the frames in)"])
    rows.append(["API Gateway: new connections", f"{n(lim('apigw_new_connections_per_s'))}/s", n(a["new"]), n(b["new"]),
                 "raise; a reconnect storm after an outage needs far more (all connections within minutes)"])
    rows.append(["Lambda concurrency (all functions)", f"{n(lim('lambda_concurrency'))}", n(a["conc"]), n(b["conc"]),
                 "raise, with headroom for cold bursts; reserve concurrency for send and fanout"])
    rows.append(["fan-out batches in flight (stream shards × ParallelizationFactor)",
                 f"shards × {val(inp, 'deployed.fanout_parallelization_factor'):g} (max × {lim('stream_parallelization_max'):g})",
                 n(a["fan"]), n(b["fan"]),
                 f"messages table partitions on day 1 ≈ {a['parts_day1']} (1×) / {b['parts_day1']} (10×); "
                 "raise ParallelizationFactor or fan out a batch's conversations concurrently"])
    for t in TABLES:
        wa, ra = a["tables"][t]
        wb, rb = b["tables"][t]
        rows.append([f"DynamoDB {t}: write / read units", f"{n(lim('ddb_table_ondemand_units'))} each per table (on-demand)",
                     f"{n(wa)} / {n(ra)}", f"{n(wb)} / {n(rb)}",
                     "raise" if max(wa, ra, wb, rb) > lim("ddb_table_ondemand_units") else "fits"])
    rows.append(["DynamoDB per partition", f"{n(lim('ddb_partition_wcu'))} WCU, {n(lim('ddb_partition_rcu'))} RCU",
                 "see hot spots", "see hot spots", "not raisable: spread keys (below)"])
    return table(["quota", "default", f"peak need 1× (× {peak:g} avg)", "peak need 10×", "action"], rows, "llrrl")


def block_hotspots(inp):
    N = val(inp, "load.busy_group_size")
    text = val(inp, "load.avg_text_bytes")
    ack = val(inp, "client.acks_per_delivered_message")
    live = 1 - val(inp, "client.offline_delivery_share")
    lim = lambda p: val(inp, f"aws_limits.{p}")  # noqa: E731
    wcu = msg_wcu(inp, text)
    reads_msgs = 1 + (N - 1) * ack
    gread = group_read_units(inp, N)
    items = member_items_units(inp, N)
    reads_grp = gread + (N - 1) * ack * items
    id_rate = 1000 / (2 * val(inp, "lambda.dynamodb_call_ms"))
    fan_ms = ms(inp, 1 + rounds(N, inp), live * rounds(N - 1, inp))
    rows = [
        [f"messages partition of one {N:g}-member group: writes", f"{wcu} WCU per message",
         f"{n(lim('ddb_partition_wcu'))} / {wcu}", n(lim("ddb_partition_wcu") / wcu)],
        ["… reads: the send's newest-id Query + every ack's last-id Query (strong)",
         f"1 + {N - 1:g} × {ack:g} = {reads_msgs:g} RCU per message", f"{n(lim('ddb_partition_rcu'))} / {reads_msgs:g}",
         n(lim("ddb_partition_rcu") / reads_msgs)],
        ["groups partition: the member list's version (fan-out), and per ack the member items (strong)",
         f"{gread} + {N - 1:g} × {ack:g} × {items} = {reads_grp:g} RCU per message",
         f"{n(lim('ddb_partition_rcu'))} / {reads_grp:g}", n(lim("ddb_partition_rcu") / reads_grp)],
        ["… writes: the sender's member item (in the send's transaction) + every ack's read mark",
         f"2 + {N - 1:g} × {ack:g} = {2 + (N - 1) * ack:g} WCU per message",
         f"{n(lim('ddb_partition_wcu'))} / {2 + (N - 1) * ack:g}", n(lim("ddb_partition_wcu") / (2 + (N - 1) * ack))],
        ["id allocation: newest-id Query then conditional put, one id at a time",
         f"2 × {val(inp, 'lambda.dynamodb_call_ms'):g} ms per id", f"1,000 ms / {2 * val(inp, 'lambda.dynamodb_call_ms'):g} ms",
         n(id_rate)],
        ["stream fan-out: one conversation's records go one batch at a time", f"{fan_ms:.0f} ms per record",
         f"1,000 ms / {fan_ms:.0f} ms", n(1000 / fan_ms)],
    ]
    out = table([f"one busy {N:g}-member group conversation", "load per message", "formula", "messages/s ceiling"],
                rows, "llll")
    C = val(inp, "hotspots.celebrity_conversations")
    rate = val(inp, "hotspots.celebrity_new_conversations_per_s")
    su = math.ceil(C * val(inp, "code.membership_item_bytes") / 4096)
    newest = 0.5 * C
    sync_ms = ms(inp, 1 + math.ceil(C / val(inp, "lambda.parallel_newest_id_reads")), 0)
    max_c = (val(inp, "deployed.lambda_timeout_s") * 1000 - ms(inp, 1)) / val(inp, "lambda.dynamodb_call_ms") \
        * val(inp, "lambda.parallel_newest_id_reads")
    rows2 = [
        ["users partition: a first message from someone new enrolls the user (1 WCU)",
         f"{n(rate)} new conversations/s", f"{n(rate)} WCU/s of {n(lim('ddb_partition_wcu'))}",
         f"{rate / lim('ddb_partition_wcu'):.0%} of the partition"],
        ["users partition: one sync reads every membership (strong Query)",
         f"{n(C)} × {val(inp, 'code.membership_item_bytes'):g} B / 4 KiB", f"{n(su)} RCU",
         f"{su / lim('ddb_partition_rcu'):.1f} s of the partition's reads"],
        ["… then the newest id of every conversation (0.5 each, spread)", f"{n(C)} × 0.5", f"{n(newest)} RCU",
         usd(newest * val(inp, "prices.ddb_ondemand_rru")) + " per sync"],
        ["sync duration in Lambda", f"⌈{n(C)} / {val(inp, 'lambda.parallel_newest_id_reads'):g}⌉ × "
                                    f"{val(inp, 'lambda.dynamodb_call_ms'):g} ms", f"{sync_ms / 1000:.1f} s",
         f"timeout {val(inp, 'deployed.lambda_timeout_s'):g} s: sync fails above ~{n(max_c)} conversations"],
        ["by_user index: every delivery to the user looks up its connections", "0.5 RRU per delivery",
         f"{n(lim('ddb_partition_rcu'))} / 0.5", f"{n(lim('ddb_partition_rcu') / 0.5)} deliveries/s"],
    ]
    out += "\n\n" + table([f"a user with {n(C)} conversations", "load", "formula", "limit"], rows2, "llll")
    return out


SENSITIVITY = [
    ("base", {}),
    ("acks per delivered message 0.1", {"client.acks_per_delivered_message": 0.1}),
    ("acks per delivered message 1.0 (the CLI)", {"client.acks_per_delivered_message": 1.0}),
    ("group receipts to every other member (before)", {"code.receipt_audience": "all members"}),
    ("groups: 40% of messages", {"load.group_message_share": 0.4}),
    ("average group of 50", {"load.avg_group_size": 50}),
    ("connected 8 h a day", {"client.connected_minutes_per_user_per_day": 480}),
    ("average text 1,000 bytes", {"load.avg_text_bytes": 1000}),
    ("Lambda calls 2× slower (10 ms DynamoDB, 20 ms posts)",
     {"lambda.dynamodb_call_ms": 10, "lambda.post_to_connection_ms": 20}),
    ("conn-tier 3× the CPU per frame and call", {"selfhosted.core_speed_vs_bench": 1 / 3}),
]


def block_sensitivity(inp):
    rows = []
    for label, ov in SENSITIVITY:
        i2 = with_overrides(inp, ov)
        c = costs(i2, 1)
        apigw = c["a_items"]["API Gateway messages"]
        rows.append([label, usd(c["a"]), usd(apigw), usd(c["b_total"]), c["b"]["nodes"], f"{c['a'] / c['b_total']:.1f}×"])
    return table(["1×, month 12, one input changed", "(a) total", "(a) API GW messages", "(b) total", "(b) nodes",
                  "(a)/(b)"], rows)


BLOCKS = {
    "summary": block_summary,
    "assumptions": block_assumptions,
    "measured": block_measured,
    "prices": block_prices,
    "calibration": block_calibration,
    "load": block_load,
    "ops": block_ops,
    "apigw": block_apigw,
    "apigw-by-op": block_receipts,
    "ack-floor": block_ack_floor,
    "lambda": block_lambda,
    "dynamodb": block_dynamodb,
    "storage": block_storage,
    "selfhosted": block_selfhosted,
    "costs": block_costs,
    "crossover": block_crossover,
    "quotas": block_quotas,
    "hotspots": block_hotspots,
    "sensitivity": block_sensitivity,
}

BEGIN = "<!-- capacity:begin {} -->"
END = "<!-- capacity:end {} -->"
BLOCK_RE = re.compile(r"<!-- capacity:begin (\S+) -->\n(.*?)<!-- capacity:end \1 -->", re.S)


def render(inp: dict) -> dict[str, str]:
    return {name: fn(inp) for name, fn in BLOCKS.items()}


def render_all(inp: dict) -> str:
    return "\n\n".join(f"{BEGIN.format(k)}\n{v}\n{END.format(k)}" for k, v in render(inp).items()) + "\n"


def doc_blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).rstrip("\n") for m in BLOCK_RE.finditer(text)}


def check(doc: Path, inp: dict) -> list[str]:
    """Differences between the doc's generated blocks and the model's."""
    have = doc_blocks(doc.read_text(encoding="utf-8"))
    want = render(inp)
    problems = []
    for name, body in want.items():
        if name not in have:
            problems.append(f"block '{name}' is missing from {doc}")
        elif have[name] != body:
            old, new = have[name].splitlines(), body.splitlines()
            first = next((i for i, (x, y) in enumerate(zip(old, new)) if x != y), min(len(old), len(new)))
            problems.append(f"block '{name}' differs from line {first + 1}:\n  doc:    "
                            f"{old[first] if first < len(old) else '<end>'}\n  script: "
                            f"{new[first] if first < len(new) else '<end>'}")
    for name in have:
        if name not in want:
            problems.append(f"block '{name}' in {doc} is not generated by the script")
    return problems


def write(doc: Path, inp: dict) -> None:
    text = doc.read_text(encoding="utf-8")
    want = render(inp)

    def sub(m):
        name = m.group(1)
        if name not in want:
            return m.group(0)
        return f"{BEGIN.format(name)}\n{want[name]}\n{END.format(name)}"

    doc.write_text(BLOCK_RE.sub(sub, text), encoding="utf-8")
    missing = [k for k in want if k not in doc_blocks(text)]
    if missing:
        print(f"note: {doc} has no place for blocks: {', '.join(missing)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=Path, default=INPUTS, help="the inputs JSON (default docs/capacity-inputs.json)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", type=Path, metavar="DOC", help="exit 1 if DOC's generated blocks are stale")
    g.add_argument("--write", type=Path, metavar="DOC", help="replace DOC's generated blocks in place")
    args = ap.parse_args(argv)
    inp = load_inputs(args.inputs)
    if args.check:
        problems = check(args.check, inp)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print(f"{args.check} is stale: run python3 scripts/capacity.py --write {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check}: {len(BLOCKS)} generated blocks match")
        return 0
    if args.write:
        write(args.write, inp)
        return 0
    sys.stdout.write(render_all(inp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

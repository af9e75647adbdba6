#!/usr/bin/env python3
"""Writes hub/src/openapi.json, the OpenAPI 3 document the hub serves at /v1/openapi.json.

Run after changing the REST API: python3 tools/gen_openapi.py (keep its paths in step with
`router()` in hub/src/api.rs; hub/tests/api.rs checks that every documented path and
method is a route).
"""
import json, pathlib

def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required)}

S = lambda d="": {"type": "string", "description": d} if d else {"type": "string"}
I = lambda d="": {"type": "integer", "format": "int64", "minimum": 0, "description": d}
B = {"type": "boolean"}
N = lambda schema: {**schema, "nullable": True}  # absent until known: null
ref = lambda n: {"$ref": f"#/components/schemas/{n}"}
arr = lambda s: {"type": "array", "items": s}

schemas = {
    "Error": obj({"error": obj({"code": S("stable error code"), "message": S("for people")}, ["code", "message"])}, ["error"]),
    "Channel": obj({
        "channel_id": S("hex"), "peer_id": S("hex node id"),
        "status": {"type": "string", "enum": ["awaiting_lock", "normal", "shutting_down", "closing", "force_closed", "awaiting_remote_close", "closed"]},
        "capacity_sat": I(), "local_balance_msat": I(), "remote_balance_msat": I(), "htlcs": I(),
        "short_channel_id": N(S("BLOCKxTXxOUTPUT once confirmed")), "funding_txid": S(), "funding_output_index": I(),
        "peer_policy": N(obj({"fee_base_msat": I(), "fee_proportional_millionths": I(), "cltv_expiry_delta": I()})),
        "closing_txid": N(S()),
        "active": {"type": "boolean", "description": "the peer is connected and the channel reestablished: payments can go out"},
        "channel_type": {"type": "string", "enum": ["anchors_zero_fee_htlc_tx", "static_remotekey"], "description": "the commitment format negotiated in open_channel/accept_channel"},
        "public": {"type": "boolean", "description": "opened with announce_channel: announced to the network once six blocks deep"},
        "announced": {"type": "boolean", "description": "both ends have signed its channel_announcement (BOLT 7)"},
        "feerate_per_kw": I("fee rate of our current commitment, sat per 1000 weight units")}),
    "Invoice": obj({
        "payment_hash": S("hex"), "bolt11": S("BOLT 11 payment request"), "amount_msat": N(I("any amount when null")), "description": S(),
        "status": {"type": "string", "enum": ["open", "paid", "expired"]}, "created_at": I("unix seconds"),
        "expires_at": I("unix seconds"), "amount_received_msat": N(I()), "paid_at": N(I("unix seconds"))}),
    "Payment": obj({
        "payment_hash": S(), "bolt11": N(S()), "payee": N(S()), "amount_msat": I(), "fee_msat": I(),
        "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
        "preimage": N(S("proof of payment, once succeeded")), "failure": N(S()), "failure_code": N(I("BOLT 4 failure code")),
        "created_at": I(), "completed_at": N(I()), "channel_id": S("first hop")}),
    "Forward": obj({
        "payment_hash": S(), "in_channel_id": S("operator only: another tenant's channel"), "in_amount_msat": I(), "out_channel_id": S(),
        "out_amount_msat": I(), "fee_msat": I(), "status": {"type": "string", "enum": ["pending", "settled", "failed"]},
        "failure": N(S()), "created_at": I(), "resolved_at": N(I())}),
    "Webhook": obj({"id": S(), "url": S(), "events": {"type": "array", "items": S()}, "created_at": I(),
                    "secret": S("hex HMAC key; only in the creation response")}),
    "Delivery": obj({"id": S(), "webhook_id": S(), "event": S(), "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                     "attempts": I(), "next_attempt_at": I(), "last_error": N(S()), "created_at": I()}),
    "Merchant": obj({"id": S(), "name": S(), "node_id": S(), "created_at": I(),
                     "key_active": {"type": "boolean", "description": "false once the operator revoked the key"},
                     "key_changed_at": N(I("when the key was last replaced or revoked")),
                     "api_key": S("only in the creation and key rotation responses")}),
    "Info": obj({"node_id": S(), "alias": S("the name in the node_announcement"), "listen": S(), "network": S(), "block_height": I(), "channels": I(),
                 "channel_local_balance_msat": I(), "channel_remote_balance_msat": I(),
                 "onchain_balance_sat": I("operator only"),
                 "tower_appointments_pending": I("operator only: appointments not yet acknowledged by a tower"),
                 "towers": arr(obj({"url": S(), "subscription_expiry": N(I("height at which the tower drops our appointments; null before the first registration, 0 once lapsed (renewed at three quarters)")),
                                    "appointments_pending": I()})),
                 "merchant": ref("Merchant")}),
}

def body(schema):
    return {"required": True, "content": {"application/json": {"schema": schema}}}

def resp(code, schema, desc="OK"):
    r = {code: {"description": desc, "content": {"application/json": {"schema": schema}}}}
    r["4XX"] = {"description": "Error", "content": {"application/json": {"schema": ref("Error")}}}
    return r

def no_content(desc):
    return {"204": {"description": desc}, "4XX": {"description": "Error", "content": {"application/json": {"schema": ref("Error")}}}}

hashp = [{"name": "hash", "in": "path", "required": True, "schema": S("payment hash, hex")}]
idp = [{"name": "id", "in": "path", "required": True, "schema": S("hex id")}]
OP = "Operator key only."
BOTH = "Operator key, or a merchant key (a merchant sees only its own)."

paths = {
    "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (operator key)", "responses": {"200": {"description": "text exposition format"}, "401": {"description": "no or wrong key"}, "403": {"description": "a merchant key"}}}},
    "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3"}}}},
    "/v1/info": {"get": {"summary": "Node info and balances", "description": BOTH, "responses": resp("200", ref("Info"))}},
    "/v1/address": {"post": {"summary": "New on-chain address of the node's wallet", "description": OP,
                             "responses": resp("200", obj({"address": S()}))}},
    "/v1/peers": {"post": {"summary": "Connect to a peer", "description": OP,
                           "requestBody": body(obj({"node_id": S(), "address": S("host:port")}, ["node_id", "address"])),
                           "responses": resp("200", obj({"connected": B}))}},
    "/v1/channels": {
        "get": {"summary": "List channels", "description": BOTH, "responses": resp("200", arr(ref("Channel")))},
        "post": {"summary": "Open a channel funded by the node's wallet",
                 "description": "Operator: to `peer_id`. Merchant: inbound liquidity, a channel from the hub to the merchant's own node (leave out peer_id).",
                 "requestBody": body(obj({"peer_id": S(), "capacity_sat": I("20000 to 16777215"), "push_msat": I(),
                                          "announce": {"type": "boolean", "description": "operator only: a public channel, announced to the network (BOLT 7); default false"}}, ["capacity_sat"])),
                 "responses": resp("201", obj({"channel_id": S()}), "Created")}},
    "/v1/channels/{id}": {"get": {"summary": "Show a channel", "description": BOTH, "parameters": idp, "responses": resp("200", ref("Channel"))}},
    "/v1/channels/{id}/close": {"post": {"summary": "Close a channel (cooperative, or force)", "description": BOTH, "parameters": idp,
                                         "requestBody": {"required": False, "content": {"application/json": {"schema": obj({"force": B})}}},
                                         "responses": resp("200", obj({"closing": S(), "commitment_txid": S()}))}},
    "/v1/channels/{id}/pay": {"post": {"summary": "Pay the channel's peer directly for a payment hash (no invoice)", "description": OP, "parameters": idp,
                                       "requestBody": body(obj({"amount_msat": I(), "payment_hash": S(), "cltv_expiry": I()}, ["amount_msat", "payment_hash"])),
                                       "responses": resp("200", obj({"payment_preimage": S()}))}},
    "/v1/channels/{id}/commitment": {"get": {"summary": "Our current signed commitment transaction (what a force close broadcasts)", "description": OP, "parameters": idp,
                                            "responses": resp("200", obj({"txid": S(), "hex": S()}))}},
    "/v1/preimages": {"post": {"summary": "Register a preimage: HTLCs for its hash are settled", "description": OP,
                               "requestBody": body(obj({"preimage": S()}, ["preimage"])), "responses": resp("200", obj({"payment_hash": S()}))}},
    "/v1/invoices": {
        "get": {"summary": "List invoices", "description": OP, "responses": resp("200", arr(ref("Invoice")))},
        "post": {"summary": "Create a BOLT 11 invoice", "description": OP + " A light node adds a route hint through its hub.",
                 "requestBody": body(obj({"amount_msat": I(), "description": S(), "expiry_secs": I("default 3600")})),
                 "responses": resp("201", ref("Invoice"), "Created")}},
    "/v1/invoices/{hash}": {"get": {"summary": "Look up an invoice", "description": OP, "parameters": hashp, "responses": resp("200", ref("Invoice"))}},
    "/v1/payments": {
        "get": {"summary": "List payments", "description": "Operator: payments sent. Merchant: payments the hub forwarded into its channels (Forward objects).",
                "responses": resp("200", {"anyOf": [arr(ref("Payment")), arr(ref("Forward"))]})},
        "post": {"summary": "Pay a BOLT 11 invoice (idempotent per payment hash)", "description": OP + " 200 succeeded, 202 still pending after wait_secs, 422 failed.",
                 "requestBody": body(obj({"invoice": S(), "amount_msat": I("only for invoices without an amount"), "wait_secs": I("default 30, max 120")}, ["invoice"])),
                 "responses": resp("200", ref("Payment"))}},
    "/v1/payments/{hash}": {"get": {"summary": "Look up a payment", "description": BOTH, "parameters": hashp, "responses": resp("200", ref("Payment"))}},
    "/v1/forwards": {"get": {"summary": "HTLCs forwarded by this node", "description": BOTH, "responses": resp("200", arr(ref("Forward")))}},
    "/v1/webhooks": {
        "get": {"summary": "List webhooks", "description": BOTH, "responses": resp("200", arr(ref("Webhook")))},
        "post": {"summary": "Register a webhook",
                 "description": BOTH + " Deliveries are POSTed with header `Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>`, retried with exponential backoff, kept across restarts. Events: invoice.paid, payment.succeeded, payment.failed, channel.opened, channel.closed.",
                 "requestBody": body(obj({"url": S(), "events": arr(S())}, ["url"])),
                 "responses": resp("201", ref("Webhook"), "Created")}},
    "/v1/webhooks/{id}": {"delete": {"summary": "Delete a webhook", "description": BOTH, "parameters": idp, "responses": no_content("Deleted")}},
    "/v1/webhooks/{id}/test": {"post": {"summary": "Queue a webhook.test delivery to this webhook", "description": BOTH, "parameters": idp,
                                        "responses": resp("202", obj({"delivery_id": S()}), "Queued")}},
    "/v1/webhooks/deliveries": {"get": {"summary": "Webhook deliveries and their state", "description": BOTH, "responses": resp("200", arr(ref("Delivery")))}},
    "/v1/merchants": {
        "get": {"summary": "List merchants", "description": OP, "responses": resp("200", arr(ref("Merchant")))},
        "post": {"summary": "Create a merchant and its API key (shown once)", "description": OP,
                 "requestBody": body(obj({"name": S(), "node_id": S("the merchant's light node")}, ["name", "node_id"])),
                 "responses": resp("201", ref("Merchant"), "Created")}},
    "/v1/merchants/{id}/key": {
        "post": {"summary": "Give a merchant a new API key (shown once); the old one stops working at once", "description": OP, "parameters": idp,
                 "responses": resp("200", ref("Merchant"))},
        "delete": {"summary": "Revoke a merchant's API key (its channels and records stay)", "description": OP, "parameters": idp,
                   "responses": no_content("Revoked")}},
}

doc = {
    "openapi": "3.0.3",
    "info": {"title": "hub REST API", "version": "1",
             "description": "Amounts are integers with the unit in the name; ids and hashes are lowercase hex; times are Unix seconds. A merchant key is limited to a rate of requests (429 rate_limited) and to quotas on the channels the hub funds to it, on its webhooks and on its pending test deliveries (429 quota_exceeded)."},
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
    "paths": paths,
}
out = pathlib.Path(__file__).resolve().parent.parent / "hub" / "src" / "openapi.json"
out.write_text(json.dumps(doc, indent=1) + "\n")

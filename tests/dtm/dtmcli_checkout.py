"""Drives one TCC global transaction through tccd with DTM's own Python client (dtmcli).

Usage: python dtmcli_checkout.py SPEC_JSON
SPEC_JSON: {"dtm": "http://HOST:PORT/api/dtmsvr",
            "branches": [{"try": URL, "confirm": URL, "cancel": URL, "body": {...}}, ...]}
Prints one JSON line: {"gid": ..., "committed": true|false}.
"""
import json
import sys

from dtmcli import tcc, utils


def main():
    spec = json.loads(sys.argv[1])
    dtm = spec["dtm"]
    gid = utils.gen_gid(dtm)

    def branches(t):
        for b in spec["branches"]:
            t.call_branch(b["body"], b["try"], b["confirm"], b["cancel"])

    # tcc_global_transaction submits when every Try succeeded, and aborts (returning "")
    # when one raised.
    result = tcc.tcc_global_transaction(dtm, gid, branches)
    print(json.dumps({"gid": gid, "committed": result == gid}))


if __name__ == "__main__":
    main()

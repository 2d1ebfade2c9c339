"""The child side of the sandbox: run ONE test case of one program and print the returned value.

Run as `python -I -S harness.py PROGRAM_FILE` inside the sandbox, with one JSON object on stdin:
{"entry_point": "Solution().method" | "Solution.method" | "function", "input": "a = 1, b = [2]", "nonce": "..."}.
It prints exactly one line `<nonce> <json>` on the stdout it was started with, where <json> is
{"ok": true, "value": <tagged value>} or {"ok": false, "error": "..."}.

This file deliberately imports nothing from qrpo (it is started by a bare interpreter that sees
only the standard library) and it never sees the expected output: it reports what the program
returned, and the parent decides whether that is right. Whatever the program does to this
process (monkey-patching, printing, forging a result line) it can at most claim some return
value, which it could have returned honestly; it cannot learn the answer or vote on the verdict.

Values are encoded as type-tagged JSON, accepting only exact built-in types (`type(v) is int`,
never `isinstance`), so an object whose `__eq__` says "equal to everything" is not serialisable
and earns nothing. LeetCode's ListNode / TreeNode results are turned into their list forms.
"""

import ast
import builtins
import json
import os
import sys

# Captured before any model-written code runs: later monkey-patching of builtins cannot reach these.
_type, _len, _repr, _str, _isinstance, _getattr, _write, _dumps = type, len, repr, str, isinstance, getattr, os.write, json.dumps
_MAX_NODES = 1_000_000

# The usual LeetCode preamble (what LeetCodeDataset's prompts import and define for the solution):
# the imports, which code extraction also prepends to every program, then ListNode / TreeNode.
IMPORTS = """import bisect, collections, functools, heapq, itertools, math, operator, random, re, string
from bisect import *
from collections import *
from functools import *
from heapq import *
from itertools import *
from math import *
from operator import *
from string import *
from typing import *
inf = float("inf")
"""

PREAMBLE = IMPORTS + """

class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next


class TreeNode:
    def __init__(self, val=0, left=None, right=None):
        self.val = val
        self.left = left
        self.right = right


def list_node(values):
    head = ListNode()
    tail = head
    for v in values:
        tail.next = ListNode(v)
        tail = tail.next
    return head.next


def tree_node(values):
    if not values:
        return None
    root = TreeNode(values[0])
    queue, i = deque([root]), 1
    while queue and i < len(values):
        node = queue.popleft()
        for side in ("left", "right"):
            if i < len(values) and values[i] is not None:
                child = TreeNode(values[i])
                setattr(node, side, child)
                queue.append(child)
            i += 1
    return root
"""


class Unserialisable(Exception):
    pass


def encode(value):
    """A JSON tree [tag, payload] of a plain Python value; Unserialisable for anything else."""
    budget = [_MAX_NODES]

    def enc(v):
        budget[0] -= 1
        if budget[0] < 0:
            raise Unserialisable("return value too large")
        t = _type(v)
        if v is None:
            return ["none"]
        if t is bool:
            return ["bool", v is True]
        if t is int:
            return ["int", int.__repr__(v)]
        if t is float:
            return ["float", float.__repr__(v)]
        if t is str:
            return ["str", v]
        if t is list or t is tuple:
            items = list.__iter__(v) if t is list else tuple.__iter__(v)  # the type's own iterator, not an override
            return ["list" if t is list else "tuple", [enc(x) for x in items]]
        if t is dict:
            return ["dict", [[enc(k), enc(x)] for k, x in dict.items(v)]]
        if t is set or t is frozenset:
            return ["set", [enc(x) for x in (set.__iter__(v) if t is set else frozenset.__iter__(v))]]
        name = t.__name__ if _isinstance(t.__name__, _str) else ""
        if name == "ListNode":  # a linked list is reported as the list of its values
            values, node = [], v
            while node is not None and _len(values) < _MAX_NODES:
                values.append(enc(_getattr(node, "val")))
                node = _getattr(node, "next")
            return ["list", values]
        if name == "TreeNode":  # a binary tree as LeetCode's level order with None holes, trailing Nones dropped
            values, queue = [], [v]
            while queue and _len(values) < _MAX_NODES:
                node = queue.pop(0)
                values.append(["none"] if node is None else enc(_getattr(node, "val")))
                if node is not None:
                    queue += [_getattr(node, "left"), _getattr(node, "right")]
            while values and values[-1] == ["none"]:
                values.pop()
            return ["list", values]
        raise Unserialisable(f"cannot compare a returned {t.__name__!s:.40} (only plain values are accepted)")

    return enc(value)


def _call_target(namespace, entry_point):
    """The callable named by `Solution().method`, `Solution.method` or `function`."""
    name = entry_point.replace("()", "")
    if "." in name:
        cls_name, method = name.split(".", 1)
        return _getattr(namespace[cls_name](), method)
    return namespace[name]


def _kwargs(source, namespace, target):
    """`a = 1, b = [2]` -> {"a": 1, "b": [2]}, each value evaluated in the program's namespace.

    A list given for a parameter annotated ListNode / TreeNode becomes that structure (LeetCode
    writes linked lists and trees as lists in its examples)."""
    call = ast.parse(f"f({source})", mode="eval").body
    kwargs = {kw.arg: eval(compile(ast.Expression(kw.value), "<input>", "eval"), namespace) for kw in call.keywords}
    annotations = _getattr(target, "__annotations__", None) or {}
    for name, value in kwargs.items():
        hint = _str(annotations.get(name, ""))
        if _type(value) is list and "ListNode" in hint:
            kwargs[name] = namespace["list_node"](value)
        elif _type(value) is list and "TreeNode" in hint:
            kwargs[name] = namespace["tree_node"](value)
    return kwargs


def main():
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    nonce = request["nonce"]
    result_fd = os.dup(1)  # the program's prints go to /dev/null; only this line reaches the parent
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)

    def report(obj):
        try:
            line = f"\n{nonce} {_dumps(obj)}\n".encode()
        except (ValueError, RecursionError) as err:  # e.g. an int too long to print
            line = f"\n{nonce} {_dumps({'ok': False, 'error': _repr(err)[:300]})}\n".encode()
        _write(result_fd, line)

    try:
        with open(sys.argv[1]) as f:
            source = f.read()
        namespace = {"__name__": "solution", "__builtins__": builtins}
        exec(compile(PREAMBLE, "<preamble>", "exec"), namespace)
        exec(compile(source, "solution.py", "exec"), namespace)
        target = _call_target(namespace, request["entry_point"])
        value = target(**_kwargs(request["input"], namespace, target))
        encoded = encode(value)
    except BaseException as err:  # noqa: BLE001 -- anything the program raises is its failure
        try:
            message = f"{_type(err).__name__}: {err}"
        except BaseException:  # noqa: BLE001 -- an exception whose __str__ raises
            message = "an exception that cannot be printed"
        report({"ok": False, "error": message[:500]})
        return
    report({"ok": True, "value": encoded})


if __name__ == "__main__":
    main()

"""`shopfloor browse`: list the variables of an OPC UA server under a node as a `collect:` section, so nobody
types thousands of NodeIds by hand.

The walk follows the hierarchical references (Organizes, HasComponent, ...) from the start node down `--depth`
levels, leaves out the server's own nodes (namespace 0) and the properties of a variable, and keeps the
variables whose values are single numbers (Boolean, integers, Float, Double, enumerations and their subtypes;
not arrays): the only values a process value can hold. The others are listed as comments. Each is named by its browse path below the start node, addressed by
`nsu=<namespace URI>;...` (a namespace's index may change when the server restarts; its URI does not), with the
unit of its EngineeringUnits property when it has one.

Exit codes: 0 with the YAML on stdout; 2 when the command line is wrong; 3 when the server cannot be reached
or has no such node or namespace. A problem is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asyncua import Client, Node, ua
from asyncua.common.ua_utils import get_base_data_type

from agent.config import SLUG, parse_node_id

log = logging.getLogger(__name__)

DEFAULT_DEPTH = 10
READ_CHUNK = 500  # nodes per Read request: below what servers commonly allow (MaxNodesPerRead)
# Data types whose values are numbers: Boolean, SByte .. Double, Number, Integer, UInteger, Enumeration.
NUMBER_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 26, 27, 28, 29})
# A level of the tree is browsed BROWSE_CHUNK nodes to a request (below what servers commonly allow,
# MaxNodesPerBrowse), CONCURRENT_BROWSES requests in flight: big address spaces take few round trips, and the
# server is not flooded.
BROWSE_CHUNK = 200
CONCURRENT_BROWSES = 4
HIERARCHICAL = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
HAS_PROPERTY = ua.NodeId(ua.Int32(ua.ObjectIds.HasProperty))


class BrowseError(Exception):
    """The browse cannot be done; `exit_code` 2 (the command line is wrong) or 3 (the server)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class FoundTag:
    """A variable found under the start node."""

    name: str  # its browse path below the start node, joined with '.'
    address: str  # its NodeId, namespace by URI
    unit: str | None
    data_type: str  # e.g. Double; for the comment of a variable left out


# --- pure parts: NodeId text, names, YAML -----------------------------------------------------------------------


def node_id_text(node_id: ua.NodeId, namespaces: Sequence[str]) -> str:
    """The NodeId in the syntax of `collect:` addresses: `nsu=<URI>;` for every namespace but 0."""
    kinds = {ua.NodeIdType.TwoByte: "i", ua.NodeIdType.FourByte: "i", ua.NodeIdType.Numeric: "i",
             ua.NodeIdType.String: "s", ua.NodeIdType.Guid: "g", ua.NodeIdType.ByteString: "b"}
    kind = kinds[node_id.NodeIdType]
    identifier = node_id.Identifier
    text = base64.b64encode(bytes(identifier)).decode() if kind == "b" else str(identifier)  # type: ignore[arg-type]
    ns = node_id.NamespaceIndex
    if ns == 0:
        return f"{kind}={text}"
    if ns < len(namespaces):
        return f"nsu={namespaces[ns]};{kind}={text}"
    return f"ns={ns};{kind}={text}"


def tag_name(path: Sequence[str]) -> str:
    """A series name from a browse path: its parts joined with '.'; line breaks and surrounding spaces dropped,
    '/', '+' and '#' (which a live MQTT topic level cannot hold) made '_'."""
    parts = (re.sub(r"[/+#\0]", "_", re.sub(r"[\r\n]+", " ", part)).strip() for part in path)
    return ".".join(parts).strip().rstrip("\\") or "_"


def unique_names(tags: Iterable[FoundTag]) -> list[FoundTag]:
    """The tags with a repeated name made unique by a suffix ~2, ~3, ... (two nodes with one browse path)."""
    seen: dict[str, int] = {}
    out = []
    for tag in tags:
        n = seen.get(tag.name, 0) + 1
        seen[tag.name] = n
        out.append(tag if n == 1 else FoundTag(f"{tag.name}~{n}", tag.address, tag.unit, tag.data_type))
    return out


def collect_yaml(source_id: str, tags: Sequence[FoundTag], left_out: Sequence[FoundTag], header: str) -> str:
    """A `collect:` section for `source_id` listing `tags` (flow mappings, one a line); the variables left out
    (not numbers) follow as comments."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += ["collect:", f"  {source_id}:"]
    if not tags:
        lines[-1] += " []"
    for tag in tags:
        unit = f", unit: {_quoted(tag.unit)}" if tag.unit else ""
        lines.append(f"    - {{name: {_quoted(tag.name)}, address: {_quoted(tag.address)}{unit}}}")
    if left_out:
        lines.append(f"# left out: {len(left_out)} variables whose values are not single numbers")
        lines += [f"#   {tag.name} ({tag.data_type}): {tag.address}" for tag in left_out]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    # a JSON string is a YAML double-quoted scalar
    return json.dumps(text, ensure_ascii=False)


# --- the walk ----------------------------------------------------------------------------------------------------


async def _resolve(client: Client, text: str, namespaces: Sequence[str]) -> ua.NodeId:
    try:
        namespace, kind, identifier = parse_node_id(text)
    except ValueError as exc:
        raise BrowseError(f"--under {text}: expected {exc}", 2) from None
    if isinstance(namespace, str):
        if namespace not in namespaces:
            raise BrowseError(f"--under {text}: namespace {namespace} is not on this server (it has: "
                              + ", ".join(namespaces[1:]) + ")", 3)
        namespace = namespaces.index(namespace)
    return ua.NodeId.from_string(f"ns={namespace};{kind}={identifier}")


async def _read(client: Client, nodes: list[Node], attribute: ua.AttributeIds) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for i in range(0, len(nodes), READ_CHUNK):
        out += await client.read_attributes(nodes[i:i + READ_CHUNK], attribute)
    return out


async def browse(client: Client, under: str, depth: int) -> tuple[list[FoundTag], list[FoundTag]]:
    """(numeric variables, variables left out) under the node `under`, down `depth` levels."""
    namespaces = list(await client.get_namespace_array())
    start = client.get_node(await _resolve(client, under, namespaces))
    try:
        await start.read_browse_name()
    except ua.UaStatusCodeError as exc:
        raise BrowseError(f"--under {under}: no such node on this server ({type(exc).__name__})", 3) from None
    visited = {start.nodeid}
    requests = asyncio.Semaphore(CONCURRENT_BROWSES)
    # (position in the tree, browse path, node): sorted by position, variables come out as a depth-first walk
    variables: list[tuple[tuple[int, ...], tuple[str, ...], Node]] = []
    units: dict[ua.NodeId, Node] = {}  # variable -> its EngineeringUnits property
    Branch = tuple[Node, tuple[int, ...], tuple[str, ...], bool]
    frontier: list[Branch] = [(start, (), (), False)]
    for level in range(depth + 1):
        below: list[Branch] = []
        chunks = [frontier[i:i + BROWSE_CHUNK] for i in range(0, len(frontier), BROWSE_CHUNK)]
        found = [refs for chunk in await asyncio.gather(*(_children(client, [n for n, *_ in chunk], requests)
                                                          for chunk in chunks)) for refs in chunk]
        for (node, position, path, is_variable), refs in zip(frontier, found, strict=True):
            for i, ref in enumerate(refs):
                child = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
                if ref.ReferenceTypeId == HAS_PROPERTY:
                    if is_variable and ref.BrowseName.Name == "EngineeringUnits":
                        units[node.nodeid] = client.get_node(child)
                    continue
                if level == depth or child.NamespaceIndex == 0 or child in visited:
                    continue
                visited.add(child)
                branch = (client.get_node(child), (*position, i), (*path, ref.BrowseName.Name))
                if ref.NodeClass == ua.NodeClass.Variable:
                    variables.append((branch[1], branch[2], branch[0]))
                    below.append((*branch, True))
                elif ref.NodeClass == ua.NodeClass.Object:
                    below.append((*branch, False))
        frontier = below
    variables.sort(key=lambda v: v[0])
    return await _describe(client, [(path, node) for _, path, node in variables], units, namespaces)


async def _children(client: Client, nodes: list[Node],
                    requests: asyncio.Semaphore) -> list[list[ua.ReferenceDescription]]:
    """The hierarchical references of each node, forward, in one Browse request for all of them."""
    params = ua.BrowseParameters()
    params.View = ua.ViewDescription()
    params.RequestedMaxReferencesPerNode = 0
    for node in nodes:
        desc = ua.BrowseDescription()
        desc.NodeId = node.nodeid
        desc.BrowseDirection = ua.BrowseDirection.Forward
        desc.ReferenceTypeId = HIERARCHICAL
        desc.IncludeSubtypes = True
        desc.ResultMask = ua.BrowseResultMask.All
        params.NodesToBrowse.append(desc)
    async with requests:
        results = await client.uaclient.browse(params)
    out = []
    for node, result in zip(nodes, results, strict=True):
        if result.ContinuationPoint:
            # more references than the server gives in one answer: this node alone, continued to the end
            out.append(await node.get_children_descriptions())
        else:
            out.append(list(result.References) if result.StatusCode.is_good() else [])
    return out


async def _describe(client: Client, variables: list[tuple[tuple[str, ...], Node]], units: dict[ua.NodeId, Node],
                    namespaces: list[str]) -> tuple[list[FoundTag], list[FoundTag]]:
    nodes = [node for _, node in variables]
    data_types = await _read(client, nodes, ua.AttributeIds.DataType)
    ranks = await _read(client, nodes, ua.AttributeIds.ValueRank)
    unit_nodes = list(units.values())
    unit_values = dict(zip((n.nodeid for n in unit_nodes), await _read(client, unit_nodes, ua.AttributeIds.Value),
                           strict=True))
    base_of: dict[ua.NodeId, ua.NodeId] = {}
    kept: list[FoundTag] = []
    left_out: list[FoundTag] = []
    for (path, node), dtype_value, rank_value in zip(variables, data_types, ranks, strict=True):
        dtype = dtype_value.Value.Value if dtype_value.Value is not None else None
        base = await _base_type(client, dtype, base_of) if isinstance(dtype, ua.NodeId) else None
        type_name = _type_name(dtype, base)
        rank = rank_value.Value.Value if rank_value.Value is not None else -1
        unit = _unit_text(unit_values.get(units[node.nodeid].nodeid)) if node.nodeid in units else None
        tag = FoundTag(tag_name(path), node_id_text(node.nodeid, namespaces), unit, type_name)
        numeric = base is not None and base.NamespaceIndex == 0 and base.Identifier in NUMBER_TYPES
        (kept if numeric and rank < 0 else left_out).append(tag)  # rank 0 or more: an array
    return unique_names(kept), left_out


async def _base_type(client: Client, dtype: ua.NodeId, cache: dict[ua.NodeId, ua.NodeId]) -> ua.NodeId:
    if dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int) and dtype.Identifier <= 29:
        return dtype
    if dtype not in cache:
        try:
            cache[dtype] = (await get_base_data_type(client.get_node(dtype))).nodeid
        except Exception:  # a data type the server cannot place: left out, not fatal
            cache[dtype] = dtype
    return cache[dtype]


def _type_name(dtype: object, base: ua.NodeId | None) -> str:
    for candidate in (dtype, base):
        if isinstance(candidate, ua.NodeId) and candidate.NamespaceIndex == 0:
            name = ua.ObjectIdNames.get(int(candidate.Identifier))  # type: ignore[arg-type]
            if name:
                return str(name)
    return str(dtype.to_string() if isinstance(dtype, ua.NodeId) else dtype)


def _unit_text(value: ua.DataValue | None) -> str | None:
    eu = value.Value.Value if value is not None and value.Value is not None else None
    if isinstance(eu, ua.EUInformation):
        text = (eu.DisplayName.Text if eu.DisplayName else None) or (eu.Description.Text if eu.Description else None)
        return text.strip() or None if text else None
    return None


# --- the command ---------------------------------------------------------------------------------------------------


async def run_browse(endpoint: str, under: str, depth: int, timeout_s: float, username: str | None,
                     password: str | None) -> tuple[list[FoundTag], list[FoundTag]]:
    """Connect to `endpoint`, browse, disconnect; BrowseError when the server cannot be reached or browsed."""
    # the connection watchdog probes the server every watchdog_intervall and gives up after as long: a server
    # busy answering a big browse must get the same time as any other answer
    client = Client(endpoint, timeout=timeout_s, watchdog_intervall=timeout_s)
    if username:
        client.set_user(username)
        client.set_password(password or "")
    try:
        await asyncio.wait_for(client.connect(), timeout_s * 2)
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise BrowseError(f"cannot reach {endpoint}: {_reason(exc)}", 3) from None
    try:
        return await browse(client, under, depth)
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise BrowseError(f"{endpoint}: browsing failed: {_reason(exc)}", 3) from None
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), timeout_s)
        except Exception:  # the answer is complete; a failed goodbye does not change it
            log.debug("disconnect from %s failed", endpoint, exc_info=True)


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", help="the OPC UA server, opc.tcp://host:port[/path]")
    parser.add_argument("--under", default="i=85",
                        help="the NodeId to browse below, e.g. ns=2;s=Line1 or nsu=urn:vendor:plc;i=1000 "
                             "(default i=85, the Objects folder)")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                        help=f"levels below --under to look at (default {DEFAULT_DEPTH})")
    parser.add_argument("--source-id", default="plc-1",
                        help="the OPC UA source's id in the config, the key under collect: (default plc-1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    parser.add_argument("--username", help="log in as this user (password from the OPCUA_PASSWORD environment "
                                           "variable); default anonymous")


def cmd_browse(args: argparse.Namespace) -> int:
    """Print the `collect:` YAML of the variables under --under; one line on stderr and 2 or 3 on a problem."""
    try:
        if not args.endpoint.startswith("opc.tcp://"):
            raise BrowseError(f"{args.endpoint}: expected an endpoint opc.tcp://host:port[/path]", 2)
        if not re.match(SLUG, args.source_id):
            raise BrowseError(f"--source-id {args.source_id}: expected a short id of lower-case letters, digits, "
                              "'-' or '_'", 2)
        if args.depth < 1:
            raise BrowseError(f"--depth {args.depth}: expected 1 or more", 2)
        # asyncua logs every failed step at length; the one line below says what went wrong
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        tags, left_out = asyncio.run(run_browse(args.endpoint, args.under, args.depth, args.timeout, args.username,
                                                os.environ.get("OPCUA_PASSWORD")))
    except BrowseError as exc:
        print(f"shopfloor browse: {exc}", file=sys.stderr)
        return exc.exit_code
    header = (f"shopfloor browse {args.endpoint} --under {args.under} --depth {args.depth}\n"
              f"{len(tags)} variables to collect; paste under the config's collect: and check with check-config")
    sys.stdout.write(collect_yaml(args.source_id, tags, left_out, header))
    print(f"shopfloor browse: {len(tags)} variables found, {len(left_out)} left out (not single numbers)", file=sys.stderr)
    return 0

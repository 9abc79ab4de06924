"""A faster, spec-conformant data change path for asyncua's server (process-wide patch).

Stock asyncua 2.1.0 deep-copies every value for every monitored item, compares deadbands with the previous
*sampled* value and does not implement PercentDeadband; `install_fast_datachange` replaces those two methods.
"""

from __future__ import annotations

import copy
from datetime import datetime

from asyncua import ua
from asyncua.server import monitored_item_service as mis

_IMMUTABLE = (bool, int, float, str, bytes, datetime, type(None))
_fast_path_installed = False
_HAS_PROPERTY = ua.NodeId(ua.Int32(ua.ObjectIds.HasProperty))


def _set_current_datavalue(self: mis.MonitoredItemValues, cur_val: ua.DataValue) -> None:
    """Like asyncua's, but shares scalar values instead of deep-copying each one for every monitored item.

    Sharing is safe because nothing in asyncua (nor this simulator) changes a DataValue after writing it: new
    values always come as new objects. Arrays and structures are still copied.
    """
    self.old_dvalue = self.current_dvalue
    variant = cur_val.Value
    if variant is None or isinstance(variant.Value, _IMMUTABLE):
        self.current_dvalue = cur_val
    else:
        self.current_dvalue = copy.deepcopy(cur_val)


def _eu_range(service: mis.MonitoredItemService, mdata: mis.MonitoredItemData) -> tuple[float, float] | None:
    """The EURange property of the monitored node, looked up once per monitored item."""
    cached = getattr(mdata, "_shopfloor_eu_range", False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    found: tuple[float, float] | None = None
    node_id = mdata.read_value_id.NodeId if mdata.read_value_id is not None else None
    node = service.aspace.get(node_id) if node_id is not None else None
    for ref in node.references if node is not None else []:
        if ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName.Name == "EURange":
            dv = service.aspace.read_attribute_value(ref.NodeId, ua.AttributeIds.Value)
            if dv.Value is not None and isinstance(dv.Value.Value, ua.Range):
                found = (dv.Value.Value.Low, dv.Value.Value.High)
    mdata._shopfloor_eu_range = found  # type: ignore[attr-defined]
    return found


def _passes_filter(
    service: mis.MonitoredItemService, mdata: mis.MonitoredItemData, new: ua.DataValue, last: ua.DataValue | None
) -> bool:
    """Whether a new value is reported, judged against the last *reported* value as OPC UA Part 4 7.22.2 says."""
    if last is None:
        return True
    if new.StatusCode != last.StatusCode:
        return True
    # Duck-typed: after a server loads its type definitions, ua.DataChangeFilter may be another class than
    # the one a decoded request carries.
    flt = mdata.filter if hasattr(mdata.filter, "DeadbandType") else None
    trigger = flt.Trigger if flt is not None else ua.DataChangeTrigger.StatusValue
    if trigger == ua.DataChangeTrigger.Status:
        return False
    if trigger == ua.DataChangeTrigger.StatusValueTimestamp and new.SourceTimestamp != last.SourceTimestamp:
        return True
    if new.Value == last.Value:
        return False
    if flt is None or flt.DeadbandType == ua.DeadbandType.None_:
        return True
    try:
        delta = abs(float(new.Value.Value) - float(last.Value.Value))  # type: ignore[union-attr, arg-type]
    except (TypeError, ValueError, AttributeError):
        return True  # deadbands apply to numbers only
    if flt.DeadbandType == ua.DeadbandType.Absolute:
        return delta > flt.DeadbandValue
    if flt.DeadbandType == ua.DeadbandType.Percent:
        eu_range = _eu_range(service, mdata)
        if eu_range is None:
            return True
        return delta > flt.DeadbandValue / 100.0 * abs(eu_range[1] - eu_range[0])
    return True


async def _datachange_callback(
    self: mis.MonitoredItemService, handle: int, value: ua.DataValue, error: ua.StatusCode | None = None
) -> None:
    """asyncua's data change callback with the per-item deep copy avoided and deadbands done as the spec says."""
    if error:
        await self.trigger_statuschange(error)
        return
    mid = self._monitored_datachange[handle]
    mdata = self._monitored_items[mid]
    if mdata.mode == ua.MonitoringMode.Disabled:
        return
    mdata.mvalue.set_current_datavalue(value)
    last = getattr(mdata.mvalue, "_shopfloor_reported", None)
    if not _passes_filter(self, mdata, value, last):
        return
    mdata.mvalue._shopfloor_reported = value  # type: ignore[attr-defined]
    event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
    await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)


def install_fast_datachange() -> None:
    """Patch asyncua 2.1.0's server data change path (process-wide, idempotent).

    Stock asyncua deep-copies every value for every monitored item (most of its ~65 us per change), compares
    deadbands with the previous *sampled* value (so a slow drift is never reported) and does not implement
    PercentDeadband at all (it logs a warning per change and reports everything). The patch shares immutable
    values, compares with the last reported value, and applies PercentDeadband using the node's EURange.
    """
    global _fast_path_installed
    if _fast_path_installed:
        return
    mis.MonitoredItemValues.set_current_datavalue = _set_current_datavalue  # type: ignore[method-assign]
    mis.MonitoredItemService.datachange_callback = _datachange_callback  # type: ignore[method-assign]
    _fast_path_installed = True

"""Every label the e-boards show, in Simplified Chinese (as used on Chinese shop floors) and English.

The pages and their scripts take all visible text from here: templates through `t(key)`, scripts through the
`labels` dict embedded as JSON. Both languages have the same keys; a value is the same in both only for symbols
and abbreviations listed in SAME_IN_BOTH (OEE, MTBF, SI units...). Placeholders in braces (`{n}`, `{agent}`) are
filled in by the page script.
"""

from __future__ import annotations

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"

# Label pairs: key -> (zh-CN, en). Kept as pairs so a label can never exist in one language only.
_PAIRS: dict[str, tuple[str, str]] = {
    # --- the application and its pages
    "app.name": ("车间电子看板", "Shop-floor e-board"),
    "page.overview": ("工厂总览", "Factory overview"),
    "page.line": ("产线看板", "Line board"),
    "page.machine": ("设备详情", "Machine detail"),
    "page.stops": ("停机原因登记", "Stop reasons"),
    "page.login": ("登录", "Sign in"),
    "page.kiosk": ("大屏轮播", "Kiosk"),
    "nav.overview": ("总览", "Overview"),
    "nav.lines": ("产线", "Lines"),
    "nav.stops": ("停机原因", "Stop reasons"),
    "nav.kiosk": ("大屏模式", "TV mode"),
    "nav.line_board": ("返回产线看板", "Back to the line board"),
    "nav.machine": ("设备详情", "Machine detail"),
    "nav.language": ("语言", "Language"),
    "lang.zh-CN": ("中文", "中文"),
    "lang.en": ("English", "English"),
    # --- banners and connection
    "banner.connection_lost": ("连接中断 — 正在重连", "Connection lost — reconnecting"),
    "banner.no_live_data": ("工厂无实时数据", "No live data from the factory"),
    "banner.stale_since": ("最后更新", "Last update"),
    "conn.live": ("实时", "Live"),
    "conn.polling": ("轮询", "Polling"),
    "conn.lost": ("离线", "Disconnected"),
    # --- shift and clock
    "shift.label": ("班次", "Shift"),
    "shift.none": ("当前无班次", "No shift"),
    "shift.ended": ("已结束", "ended"),
    "shift.on_break": ("休息中", "On break"),
    "shift.remaining": ("剩余", "left"),
    "clock.label": ("时间", "Time"),
    "common.updated": ("更新于", "Updated"),
    "common.loading": ("加载中…", "Loading…"),
    "common.no_data": ("暂无数据", "No data"),
    "common.none": ("无", "None"),
    "common.unknown": ("未知", "unknown"),
    "common.yes": ("是", "yes"),
    "common.no": ("否", "no"),
    # --- machine states: one label `state.<STATE>` per BoardState (agent/core/states.py; a test holds it)
    "state.OFFLINE": ("离线", "Offline"),
    "state.NO_SHIFT": ("非生产时间", "No shift"),
    "state.PLANNED_STOP": ("计划停机", "Planned stop"),
    "state.SETUP": ("换型", "Setup"),
    "state.FAULT": ("故障", "Fault"),
    "state.STARVED": ("待料", "Starved"),
    "state.BLOCKED": ("堵料", "Blocked"),
    "state.STOPPED": ("停机", "Stopped"),
    "state.MICROSTOP": ("短暂停机", "Micro-stop"),
    "state.RUNNING": ("运行", "Running"),
    "state.SLOW": ("降速运行", "Slow"),
    "state.unknown": ("未知状态", "Unknown state"),
    # --- why a machine is offline (the board's offline_reason, recognised by the page script)
    "offline.title": ("离线原因", "Offline because"),
    "offline.no_broker": ("未配置实时数据服务器", "No live broker configured"),
    "offline.broker_lost": ("看板与实时数据服务器断开", "The dashboard lost the live broker"),
    "offline.agent": ("采集终端 {agent} 离线", "Edge agent {agent} offline"),
    "offline.no_data": ("尚无数据", "No data yet"),
    "offline.live_stopped": ("看板实时数据线程已停止", "The dashboard's live view stopped"),
    "offline.other": ("数据不可用：{raw}", "Data unusable: {raw}"),
    # --- KPIs (ISO 22400-2) and their short forms on tiles
    "kpi.title": ("关键指标", "Key figures"),
    "kpi.name": ("指标", "Figure"),
    "kpi.availability": ("可用率", "Availability"),
    "kpi.effectiveness": ("性能", "Performance"),
    "kpi.quality": ("良品率", "Quality"),
    "kpi.oee": ("OEE", "OEE"),
    "kpi.shift_oee": ("本班 OEE", "Shift OEE"),
    "kpi.line_oee": ("产线 OEE", "Line OEE"),
    "kpi.oee_check": ("OEE 校核值", "OEE cross-check"),
    "kpi.coverage": ("数据覆盖率", "Data coverage"),
    "kpi.mtbf": ("MTBF", "MTBF"),
    "kpi.mttr": ("MTTR", "MTTR"),
    "kpi.mtbf_long": ("平均故障间隔时间", "Mean time between failures"),
    "kpi.mttr_long": ("平均修复时间", "Mean time to repair"),
    "kpi.failures": ("故障次数", "Failures"),
    "kpi.microstops": ("短暂停机次数", "Micro-stops"),
    "kpi.microstop_time": ("短暂停机时间", "Micro-stop time"),
    "kpi.pbt": ("计划运行时间", "Planned busy time"),
    "kpi.apt": ("实际运行时间", "Actual production time"),
    "kpi.offline_time": ("离线时间", "Offline time"),
    "kpi.produced": ("总产量", "Produced"),
    "kpi.good": ("良品", "Good"),
    "kpi.rejected": ("不良品", "Rejects"),
    "kpi.a_short": ("可用", "A"),
    "kpi.e_short": ("性能", "P"),
    "kpi.q_short": ("良率", "Q"),
    "kpi.iso": ("ISO", "ISO"),
    "kpi.tpm": ("TPM", "TPM"),
    "kpi.view_iso": ("ISO 22400 口径", "ISO 22400 view"),
    "kpi.view_tpm": ("TPM 口径", "TPM view"),
    "kpi.view_note": ("短暂停机：ISO 口径计入性能损失，TPM 口径计入可用率损失",
                      "Micro-stops: the ISO view counts them against performance, the TPM view against availability"),
    "flag.effectiveness": ("性能超过 105%：理论节拍设置有误", "Performance above 105%: ideal cycle time wrong"),
    "flag.coverage": ("数据不完整", "Data incomplete"),
    # --- the line board's tiles
    "tile.order": ("订单", "Order"),
    "tile.sku": ("SKU", "SKU"),
    "tile.count": ("产量", "Output"),
    "tile.count_shift": ("本班产量", "Shift output"),
    "tile.reach": ("数据截至 {time}", "Data up to {time}"),
    "tile.no_data": ("无数据", "No data"),
    "tile.no_order_units": ("无订单生产 {n} 件", "{n} made with no order"),
    "tile.other_sku_units": ("非订单 SKU {n} 件", "{n} made as another SKU"),
    "tile.target": ("目标", "Target"),
    "tile.stop": ("当前停机", "Current stop"),
    "tile.reason": ("原因", "Reason"),
    "tile.no_reason": ("未登记原因", "No reason given"),
    "tile.alarm": ("报警", "Alarm"),
    "tile.process": ("工艺参数", "Process values"),
    "tile.no_order": ("无订单", "No order"),
    "tile.details": ("详情", "Details"),
    "tile.value_bad": ("数据质量差", "bad quality"),
    # --- panels of the line board
    "panel.machines": ("设备", "Machines"),
    "panel.people": ("人员", "People"),
    "panel.materials": ("物料", "Materials"),
    "panel.andon": ("安灯呼叫", "Andon calls"),
    "panel.output": ("产出", "Output"),
    "panel.order": ("当前订单", "Current order"),
    # --- people
    "people.station": ("工位", "Station"),
    "people.operators": ("在岗人员", "Operators"),
    "people.headcount": ("人数", "Headcount"),
    "people.planned": ("计划", "planned"),
    "people.present": ("在岗", "present"),
    "people.missing": ("缺员", "Missing"),
    "people.unskilled": ("无此工位技能", "Not qualified for this station"),
    "people.nobody": ("无人", "Nobody"),
    "people.output_per_operator": ("人均产量", "Output per operator"),
    "people.operator_output": ("个人产量", "Output by operator"),
    # --- andon
    "andon.open": ("未关闭呼叫", "Open calls"),
    "andon.none": ("无未关闭呼叫", "No open calls"),
    "andon.kind": ("类型", "Kind"),
    "andon.station": ("工位", "Station"),
    "andon.age": ("等待", "Waiting"),
    "andon.acked": ("已响应", "Acknowledged"),
    "andon.waiting": ("待响应", "Not acknowledged"),
    "andon.ack": ("响应", "Acknowledge"),
    "andon.ack_failed": ("响应未保存", "Acknowledgement not saved"),
    "andon.calls_shift": ("本班呼叫", "Calls this shift"),
    "andon.mean_ack": ("平均响应时间", "Mean time to acknowledge"),
    "andon.mean_resolve": ("平均处理时间", "Mean time to resolve"),
    "andon.kind.maintenance": ("设备维修", "Maintenance"),
    "andon.kind.quality": ("质量问题", "Quality issue"),
    "andon.kind.material": ("物料", "Material"),
    "andon.kind.safety": ("安全", "Safety"),
    "andon.kind.help": ("求助", "Help"),
    "andon.kind.other": ("其他", "Other"),
    # --- materials
    "material.name": ("物料", "Material"),
    "material.stock": ("线边库存", "Line-side stock"),
    "material.to_shortage": ("距缺料", "To shortage"),
    "material.below_reorder": ("低于补料点", "Below reorder point"),
    "material.reorder_point": ("补料点", "Reorder point"),
    "material.use": ("消耗", "Use"),
    "material.not_used": ("当前订单不用", "Not used by this order"),
    "material.no_use": ("无消耗", "Not consumed"),
    "material.lots": ("在用批次", "Lots in use"),
    "material.lot": ("批次", "Lot"),
    "material.qty": ("数量", "Qty"),
    "material.calls": ("叫料", "Material calls"),
    "material.no_calls": ("无叫料", "No material calls"),
    "material.line_rate": ("产线速率", "Line rate"),
    # --- overview
    "ov.state_mix": ("设备状态", "Machine states"),
    "ov.output": ("产量", "Output"),
    "ov.plan": ("计划", "Plan"),
    "ov.vs_plan": ("达成率", "vs plan"),
    "ov.andon_open": ("安灯", "Andon"),
    "ov.shortages": ("缺料预警", "Shortage risk"),
    "ov.headcount": ("人员", "Staff"),
    "ov.open_line": ("打开产线看板", "Open the line board"),
    "ov.platform": ("C2M 平台 {name}", "C2M platform {name}"),
    "ov.platform_last": ("上次送达 {time}", "last delivery {time}"),
    "ov.platform_never": ("尚未送达", "nothing delivered yet"),
    "ov.platform_waiting": ("{n} 条待发送", "{n} waiting"),
    "ov.platform_failing": ("发送失败，重试中", "failing, retrying"),
    "ov.platform_disabled": ("已停用（平台答复 410）", "disabled (the platform answered 410)"),
    # --- machine detail charts
    "chart.timeline": ("状态时间线", "State timeline"),
    "chart.hourly": ("每小时产量与计划", "Output per hour vs plan"),
    "chart.pareto": ("停机原因柏拉图", "Stop Pareto by reason"),
    "chart.trends": ("工艺参数趋势", "Process value trends"),
    "chart.good": ("良品", "Good"),
    "chart.plan": ("计划", "Plan"),
    "chart.cumulative": ("累计占比", "Cumulative"),
    "chart.duration_min": ("停机时长（分钟）", "Stop time (min)"),
    "chart.no_reason": ("未登记", "No reason"),
    "chart.no_shift": ("当前无班次，无图表", "No shift: nothing to chart"),
    # --- stops and the stop-reason form
    "stops.machine": ("设备", "Machine"),
    "stops.state": ("状态", "State"),
    "stops.start": ("开始", "Start"),
    "stops.end": ("结束", "End"),
    "stops.duration": ("时长", "Duration"),
    "stops.reason": ("原因", "Reason"),
    "stops.action": ("登记", "Set"),
    "stops.ongoing": ("进行中", "ongoing"),
    "stops.none": ("本班暂无停机", "No stops this shift"),
    "stops.choose": ("选择原因…", "Choose a reason…"),
    "stops.save": ("保存", "Save"),
    "stops.saved": ("已保存", "Saved"),
    "stops.failed": ("保存失败", "Not saved"),
    "stops.pick_first": ("请先选择原因", "Choose a reason first"),
    "stops.signed_in_as": ("当前用户", "Signed in as"),
    "stops.hint": ("为本班每次停机登记原因；微停不需要登记。",
                   "Give each stop of this shift its reason; micro-stops need none."),
    # --- login
    "login.user": ("用户名", "User name"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Sign in"),
    "login.logout": ("退出登录", "Sign out"),
    "login.failed": ("用户名或密码错误", "Wrong user name or password"),
    "login.required": ("登记停机原因需要登录", "Sign in to give stop reasons"),
    "login.expired": ("登录页面已过期，请重新登录", "The sign-in form expired; please try again"),
    "login.locked": ("登录失败次数过多，已暂时锁定，请稍后再试", "Too many failed sign-ins; locked for a while, try again later"),
    "login.kiosk_failed": ("看板令牌无效", "This screen's kiosk token is not valid"),
    # --- kiosk (TV)
    "kiosk.fullscreen": ("点击任意处进入全屏", "Tap anywhere for full screen"),
    "kiosk.next": ("下一条产线", "Next line"),
    # --- units and formats
    "unit.min": ("分钟", "min"),
    "unit.s": ("秒", "s"),
    "unit.h": ("小时", "h"),
    "unit.pcs": ("件", "pcs"),
    "unit.pcs/h": ("件/小时", "pcs/h"),
    "unit.pcs/min": ("件/分钟", "pcs/min"),
    "unit.pcs_per_person": ("件/人", "pcs/person"),
    "unit.persons": ("人", "people"),
    "unit.%": ("%", "%"),
    "unit.degC": ("°C", "°C"),
    "unit.bar": ("bar", "bar"),
    "unit.kg": ("kg", "kg"),
    "unit.m": ("m", "m"),
    # process values: labels for the usual tag names of the machine types (others show the config's name)
    "pv.speed": ("速度", "Speed"),
    "pv.mold_temp": ("模温", "Mold temperature"),
    "pv.pressure": ("压力", "Pressure"),
    "pv.coolant_temp": ("冷却液温度", "Coolant temperature"),
    "pv.spindle_load": ("主轴负载", "Spindle load"),
    "pv.seal_temp": ("封口温度", "Seal temperature"),
    "pv.air_pressure": ("气压", "Air pressure"),
    "pv.temperature": ("温度", "Temperature"),
    "fmt.seconds": ("{n} 秒", "{n} s"),
    "fmt.minutes": ("{n} 分钟", "{n} min"),
    "fmt.hours": ("{n} 小时", "{n} h"),
    "fmt.of": ("{a} / {b}", "{a} of {b}"),
    "fmt.ago": ("{d}前", "{d} ago"),
}

# Keys whose label is the same in both languages: abbreviations, symbols, and the language names themselves.
SAME_IN_BOTH = frozenset({
    "kpi.oee", "kpi.mtbf", "kpi.mttr", "kpi.iso", "kpi.tpm", "tile.sku", "lang.zh-CN", "lang.en",
    "unit.%", "unit.degC", "unit.bar", "unit.kg", "unit.m",
})

LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {key: pair[0] for key, pair in _PAIRS.items()},
    "en": {key: pair[1] for key, pair in _PAIRS.items()},
}


def normalize(lang: str | None, default: str) -> str:
    """A supported language for `lang` ("zh", "zh-cn", "zh_CN", "en-US"... map to theirs), else `default`
    (itself normalized, falling back to zh-CN)."""
    for candidate in (lang, default):
        if not candidate:
            continue
        code = candidate.strip().replace("_", "-").lower()
        if code.startswith("zh"):
            return "zh-CN"
        if code.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


def t(lang: str, key: str) -> str:
    """The label of `key` in `lang`; the English one when `lang` lacks it; the key itself when nobody has it."""
    found = LABELS.get(lang, {}).get(key)
    if found is None:
        found = LABELS["en"].get(key)
    return key if found is None else found

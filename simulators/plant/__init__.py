"""The simulated plant: one world model that the PLC and the line simulators both run (pure, no I/O).

What happens on the floor is decided here and nowhere else:
- Each line runs orders one after another. An order names a SKU and a quantity; it is done when the line's last
  machine (the end of the line in the config) has made that many good units. Between two orders the line has no
  order for a few minutes: its machines are idle, shown as PLANNED_STOP (planned idle: no order), and a new
  order starts with a changeover (SETUP, from the SKU's `setup_min`) on every machine. The first order is
  already set up when the plant starts.
- A machine with an order runs its SKU at the line's ideal cycle time plus 0-6 %, rejects about 2 % of units,
  and is interrupted now and then: short and longer unplanned stops (STOPPED; one shorter than
  `kpi.microstop_s` is a micro-stop), faults with an alarm code, starved and blocked spells.
- Breaks and off-shift time freeze every machine's own schedule (shown as PLANNED_STOP and NO_SHIFT) and badge
  the crew out; the next shift, or the end of the break, badges them in again. The site's shift calendar is
  the dashboard's (dashboard.kpi.shifts), so the plant and the boards agree on every shift edge.
- The line's last machine consumes the running SKU's BOM per unit it makes (good or reject); scales report the
  line-side stock every few seconds, a level below the reorder point calls material, a delivery loads a lot.

Time is integer microseconds of the simulated clock, and every random draw belongs to one machine, line or the
people of the site, made in event order: two processes that start the same plant (config, seed, origin) and
advance it to the same time see the same world, whatever steps they advance by. The PLC simulator serves the
machines, the line simulator publishes the floor's messages, and `Truth` records what really happened.
"""

from dashboard.kpi.shifts import NS
from simulators.clock import US
from simulators.plant.calendar import BREAK, OFF, WORK, WorkCalendar
from simulators.plant.truth import Truth
from simulators.plant.world import (
    DEFAULT_CYCLE_S,
    FloorMessage,
    MachineSnapshot,
    Plant,
    PlantLine,
    PlantMachine,
)

__all__ = ["BREAK", "DEFAULT_CYCLE_S", "NS", "OFF", "US", "WORK", "FloorMessage", "MachineSnapshot", "Plant",
           "PlantLine", "PlantMachine", "Truth", "WorkCalendar"]

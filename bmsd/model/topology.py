"""Pack topology: where each cell and temperature sensor sits (string, module, position)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the model must not import the config at run time (config imports the model)
    from bmsd.config import PackConfig


@dataclass(frozen=True, slots=True)
class Location:
    """Where a cell or sensor sits; all indices 0-based, modules in series order."""

    string: int
    module: int
    index: int

    def __str__(self) -> str:
        return f"s{self.string}/m{self.module}/c{self.index}"


@dataclass(frozen=True, slots=True)
class Topology:
    """The shape of the pack, derived once from the config.

    Cells are numbered flat, module by module (module-major), so cell ``i`` belongs to module
    ``i // cells_per_module``; the same holds for temperature sensors.
    """

    strings: int
    modules_per_string: int
    cells_per_module: int
    temps_per_module: int
    cells_in_parallel: int
    module_node_ids: tuple[int, ...]

    @classmethod
    def from_config(cls, pack: PackConfig) -> Topology:
        return cls(
            strings=pack.strings,
            modules_per_string=pack.modules_per_string,
            cells_per_module=pack.cells_per_module,
            temps_per_module=pack.temps_per_module,
            cells_in_parallel=pack.cells_in_parallel,
            module_node_ids=pack.module_node_ids,
        )

    @property
    def module_count(self) -> int:
        return self.strings * self.modules_per_string

    @property
    def cell_count(self) -> int:
        return self.module_count * self.cells_per_module

    @property
    def temp_count(self) -> int:
        return self.module_count * self.temps_per_module

    @property
    def cells_per_string(self) -> int:
        return self.modules_per_string * self.cells_per_module

    def module_string(self, module: int) -> int:
        return module // self.modules_per_string

    def cell_location(self, flat_index: int) -> Location:
        module, index = divmod(flat_index, self.cells_per_module)
        return Location(module // self.modules_per_string, module % self.modules_per_string, index)

    def temp_location(self, flat_index: int) -> Location:
        module, index = divmod(flat_index, self.temps_per_module)
        return Location(module // self.modules_per_string, module % self.modules_per_string, index)

    def cell_temp_sensor(self, cell_in_module: int) -> int:
        """The sensor (index within its module) closest to a cell: sensors spread evenly."""
        if self.temps_per_module == 0:
            return -1
        return min(
            self.temps_per_module - 1,
            cell_in_module * self.temps_per_module // self.cells_per_module,
        )

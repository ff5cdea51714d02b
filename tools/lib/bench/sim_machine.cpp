#include "tools/lib/bench/sim_machine.h"

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"

namespace moe::bench {

bool SimMachine::open(const char* preset) {
  auto topo = sim::make_preset(preset);
  if (!topo.ok()) return false;
  auto drv = sim::create_driver(std::move(topo).value());
  if (!drv.ok()) return false;
  driver = std::move(drv).value();
  auto m = mem::GlobalMemory::create(driver.get());
  if (!m.ok()) return false;
  memory = std::move(m).value();
  auto t = ic::open_transport(*driver, *memory);
  if (!t.ok()) return false;
  transport = std::move(t).value();
  return true;
}

SimMachine::~SimMachine() {
  transport.reset();
  memory.reset();
  driver.reset();
}

}  // namespace moe::bench

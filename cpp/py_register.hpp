// The parts of the _core module (module.cpp), each defined in the file of
// what it binds.
#pragma once

#include <pybind11/pybind11.h>

void register_plan(pybind11::module_& m);       // py_plan.cpp: Clip, Phase, StepPlan
void register_group(pybind11::module_& m);      // py_group.cpp: SlotGroup
void register_fast_step(pybind11::module_& m);  // py_fast_step.cpp: FastStep, DECLINED
void register_step(pybind11::module_& m);       // py_step.cpp: step()
void register_probe(pybind11::module_& m);      // py_probe.cpp: StreamProbe, RowsProbe
void register_runtime(pybind11::module_& m);    // py_runtime.cpp: threads and ISAs
void register_copy_all(pybind11::module_& m);   // py_copy_all.cpp: assign_all()

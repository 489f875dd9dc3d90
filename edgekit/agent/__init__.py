"""The device agent: runs ON the device, prints one JSON document per command.

Python >= 3.8, stdlib + numpy + whatever runtime the device has. It never imports host code
(`edgekit.*` outside this package), because it ships alone as `edgekit-agent.pyz`.
"""

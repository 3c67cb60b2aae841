print("WireGuardBench: not written yet")

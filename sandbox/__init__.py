"""Stand-ins for the far end of every wire: vSphere simulator, stub VDDK, local AWS."""

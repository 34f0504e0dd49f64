"""vSphere simulator for the snapship sandbox."""

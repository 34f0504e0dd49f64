"""The console commands behind the `snapship` and `vcenter_configuration_update` scripts."""

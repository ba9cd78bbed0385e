"""Test kit: real parts on loopback (Mosquitto, free ports, MQTT helpers) for the suite."""

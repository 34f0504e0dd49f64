"""Launching test and cutover instances from a complete snapshot group.

`messages` and `settings` are pure (workflows import them); `ec2` makes the EC2 calls.
"""

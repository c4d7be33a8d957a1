from hypothesis import settings

# property tests judge logic, not speed: a busy CI machine must not fail them on time
settings.register_profile("dockyard", deadline=None, max_examples=200)
settings.load_profile("dockyard")

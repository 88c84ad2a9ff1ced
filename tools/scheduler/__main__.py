"""``python -m tools.scheduler``: the stale entries of each wave, two at a time, each committed."""

from tools.scheduler.prerun import main

if __name__ == "__main__":
    main()

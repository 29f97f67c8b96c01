/// The VMM's version: `swiftvmm --version`, and what the API reports as vmm_version.
public let version = "0.6.0"

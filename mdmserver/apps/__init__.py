"""The app catalogue: App Store apps and enterprise apps (.ipa, .pkg) uploaded to the server."""

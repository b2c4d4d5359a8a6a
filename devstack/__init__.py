"""Local development stack: Entra ID and Microsoft Graph emulators plus Azurite."""

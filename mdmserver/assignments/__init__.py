"""Profile assignment to devices and groups, reconciled into InstallProfile / RemoveProfile commands."""
